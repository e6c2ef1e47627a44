"""agent/vad_blocks.py: Silero fed in blocks hears exactly what it hears frame by frame."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from livekit import rtc
from livekit.agents.vad import VADEvent, VADEventType
from livekit.plugins.silero import vad as silero_vad

from agent.vad_blocks import BlockedSileroVAD
from tests.fakes.speech_audio import speech, trim_silence

pytestmark = pytest.mark.voice

RATE = 16000
FRAME = RATE * 20 // 1000  # RoomIO's 20 ms frames


def _frames(seconds_of_silence: float = 1.2) -> list[rtc.AudioFrame]:
    """Half a second of silence, a sentence, then silence long enough to end the speech,
    cut in 20 ms frames."""
    said = trim_silence(speech("I would like to visit the flat tomorrow.", "en", RATE))
    quiet = np.zeros(int(RATE * 0.5), np.int16)
    after = np.zeros(int(RATE * seconds_of_silence), np.int16)
    audio = np.concatenate([quiet, said, after])
    audio = audio[: audio.size - audio.size % FRAME]
    return [
        rtc.AudioFrame(audio[i : i + FRAME].tobytes(), RATE, 1, FRAME)
        for i in range(0, audio.size, FRAME)
    ]


async def _events(vad: BlockedSileroVAD, frames: list[rtc.AudioFrame]) -> list[VADEvent]:
    stream = vad.stream()
    events: list[VADEvent] = []

    async def read() -> None:
        async for ev in stream:
            events.append(ev)

    reader = asyncio.create_task(read())
    for frame in frames:
        stream.push_frame(frame)
        await asyncio.sleep(0)
    stream.end_input()
    await asyncio.wait_for(reader, 10)
    await stream.aclose()
    return events


def _summary(events: list[VADEvent]) -> list[tuple[str, int, float]]:
    return [(ev.type.value, ev.samples_index, round(ev.probability, 6)) for ev in events]


async def test_blocks_give_the_same_inferences_and_speech_events_as_single_frames():
    frames = _frames()
    per_frame = await _events(BlockedSileroVAD.load_in_blocks(0), frames)
    in_blocks = await _events(BlockedSileroVAD.load_in_blocks(100), frames)

    kinds = [ev.type for ev in per_frame]
    assert kinds.count(VADEventType.START_OF_SPEECH) == 1
    assert kinds.count(VADEventType.END_OF_SPEECH) == 1
    # same 32 ms windows, same probabilities, same start and end of speech
    assert _summary(in_blocks) == _summary(per_frame)
    said = next(ev for ev in in_blocks if ev.type == VADEventType.END_OF_SPEECH)
    assert said.speech_duration > 1.0 and said.frames


async def test_end_of_input_pushes_what_a_block_still_holds():
    # 60 ms: less than one 100 ms block, yet its one full 32 ms window is still analysed
    frames = _frames()[:3]
    events = await _events(BlockedSileroVAD.load_in_blocks(100), frames)
    inferences = [ev for ev in events if ev.type == VADEventType.INFERENCE_DONE]
    assert len(inferences) == 3 * FRAME // 512


async def test_a_stream_refuses_audio_after_its_input_ended():
    vad = BlockedSileroVAD.load_in_blocks(100)
    stream = vad.stream()
    stream.end_input()
    with pytest.raises(RuntimeError, match="input ended"):
        stream.push_frame(_frames()[0])
    await stream.aclose()


async def test_block_size_zero_is_the_plugin_stream_and_negative_is_refused():
    stream = BlockedSileroVAD.load_in_blocks(0).stream()
    assert type(stream) is silero_vad.VADStream
    await stream.aclose()
    with pytest.raises(ValueError, match="block_ms"):
        BlockedSileroVAD.load_in_blocks(-20)
