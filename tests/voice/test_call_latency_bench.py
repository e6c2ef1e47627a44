"""bench/call_latency.py's own pieces on synthetic audio: what counts as the agent's voice at
the caller, and how a turn is timed from it (no LiveKit, no clock assertions)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bench.call_latency import EAR_THRESHOLD, AgentEar, voiced
from bench.voice_latency import answered
from tests.fakes.audio_io import VOICED, Spoken

RATE = 48000
FRAME = RATE // 100  # 10 ms, as WebRTC plays audio out


def frame(peak: int = 0, *, at: int = 0) -> np.ndarray:
    """A 10 ms frame of silence with one sample of `peak` at index `at`."""
    samples = np.zeros(FRAME, dtype=np.int16)
    samples[at] = peak
    return samples


def tone(amplitude: int) -> np.ndarray:
    t = np.arange(FRAME) / RATE
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.int16)


def test_the_ear_uses_the_callers_own_voiced_level() -> None:
    assert EAR_THRESHOLD == VOICED


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        (frame(), False),
        (frame(EAR_THRESHOLD), False),  # at the bar is not above it
        (frame(EAR_THRESHOLD + 1, at=FRAME - 1), True),  # one sample is enough, anywhere
        (frame(-(EAR_THRESHOLD + 1)), True),  # negative half-waves count
        (frame(-32768), True),  # the int16 minimum has no positive twin: no overflow
        (np.zeros(0, dtype=np.int16), False),
        (tone(150), False),  # faint line noise or codec residue
        (tone(3000), True),
    ],
)
def test_voiced_frames(samples: np.ndarray, expected: bool) -> None:
    assert voiced(samples) is expected


def said(speech_end_wall: float) -> Spoken:
    """A line the caller has finished saying, its last voiced sample at `speech_end_wall`."""
    spoken = Spoken(text="a line", samples=tone(3000), speech_end_wall=speech_end_wall)
    spoken.done.set()
    return spoken


async def test_a_turn_is_timed_from_the_callers_end_of_speech_to_the_first_voiced_frame() -> None:
    ear = AgentEar()
    # the greeting, heard before the caller spoke
    ear.hear(tone(3000), 0.50)
    ear.hear(frame(), 0.51)
    # silence and faint residue after the caller stopped, then the answer's first voice
    for i, samples in enumerate([frame(), tone(100), frame(50), tone(2500), tone(2500)]):
        ear.hear(samples, 2.60 + i * 0.01)
    assert ear.frames == 7
    assert ear.first_voiced_after(2.0) == pytest.approx(2.63)

    turn = await answered(said(2.0), lambda wall: ear.wait_for_voice_after(wall, 1))
    assert turn is not None
    speech_end, heard = turn
    assert speech_end == 2.0
    assert heard - speech_end == pytest.approx(0.63)
    # no voice after this point: no answer, no figure
    assert await answered(said(2.70), lambda wall: ear.wait_for_voice_after(wall, 0.1)) is None


def test_quiet_is_counted_from_the_last_voiced_frame() -> None:
    ear = AgentEar()
    assert ear.quiet_for(10.0) == float("inf")  # nothing heard yet
    ear.hear(tone(3000), 1.0)
    ear.hear(frame(), 1.5)  # silence does not reset it
    assert ear.quiet_for(1.8) == pytest.approx(0.8)


async def test_waiting_for_the_agent_returns_its_first_voiced_frame_after_the_wall() -> None:
    ear = AgentEar()
    ear.hear(tone(3000), 1.0)  # before the wall: not the answer

    async def answer() -> None:
        await asyncio.sleep(0.05)
        ear.hear(frame(), 5.0)  # silence after the wall is not the answer
        await asyncio.sleep(0.05)
        ear.hear(tone(3000), 5.5)

    task = asyncio.create_task(answer())
    assert await ear.wait_for_voice_after(2.0, timeout=30) == 5.5
    await task


async def test_waiting_for_an_agent_that_never_speaks_gives_up() -> None:
    ear = AgentEar()
    ear.hear(tone(3000), 1.0)
    ear.hear(frame(), 3.0)
    with pytest.raises(TimeoutError):
        await ear.wait_for_voice_after(2.0, timeout=0.2)
