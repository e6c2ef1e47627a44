"""agent/deepgram_stream.py: the plugin's Deepgram stream, sending each frame as it arrives,
against the local Deepgram fake (its own wire protocol)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from livekit.agents.stt import SpeechEvent, SpeechEventType
from livekit.plugins import deepgram
from livekit.plugins.deepgram.version import __version__ as deepgram_plugin_version

from agent.deepgram_stream import PLUGIN_VERSION, PromptDeepgramSTT
from tests.fakes.audio_io import CallerMicrophone
from tests.fakes.deepgram_listen import ListenConnection
from tests.fakes.server import running_vendor_fakes

pytestmark = pytest.mark.voice

RATE = 16000
FRAME_BYTES = RATE * 20 // 1000 * 2  # 20 ms of 16-bit mono
LINE = "Do you have a flat with a balcony?"


def test_the_copied_stream_matches_the_installed_plugin():
    # _PromptSpeechStream._run is the plugin's own with one change: an upgrade of the
    # plugin must be looked at (and this pin moved) before it ships.
    assert deepgram_plugin_version == PLUGIN_VERSION


async def _stream(
    stt_class: type[deepgram.STT], *, seconds: float, flush_at: float | None = None
) -> tuple[list[tuple[float, SpeechEvent]], float, int, ListenConnection]:
    """The caller says LINE in 20 ms frames; returns the events with their arrival times,
    the speech's end, the frames pushed and the fake's record of the connection."""
    async with running_vendor_fakes(transcripts=[LINE]) as fakes:
        async with aiohttp.ClientSession() as http:
            stt = stt_class(
                api_key="dg-key",
                base_url=fakes.deepgram_url,
                http_session=http,
                language="en",
                interim_results=True,
                mip_opt_out=True,
            )
            stream = stt.stream()
            mic = CallerMicrophone(frame_ms=20, sample_rate=RATE)
            spoken = mic.say(LINE, "en")
            events: list[tuple[float, SpeechEvent]] = []
            pushed = 0

            async def pump() -> None:
                nonlocal pushed
                started = time.monotonic()
                async for frame in mic:
                    stream.push_frame(frame)
                    pushed += 1
                    elapsed = time.monotonic() - started
                    if flush_at is not None and elapsed >= flush_at:
                        stream.flush()
                        await asyncio.sleep(0.5)
                        break
                    if elapsed > seconds:
                        break
                stream.end_input()

            async def read() -> None:
                async for ev in stream:
                    events.append((time.monotonic(), ev))

            await asyncio.gather(pump(), read())
            await stream.aclose()
            assert spoken.speech_end_wall is not None or flush_at is not None
            return events, spoken.speech_end_wall or 0.0, pushed, fakes.listen.connections[0]


def _finals(events: list[tuple[float, SpeechEvent]]) -> list[tuple[float, str]]:
    return [
        (t, ev.alternatives[0].text)
        for t, ev in events
        if ev.type == SpeechEventType.FINAL_TRANSCRIPT
    ]


async def test_each_frame_goes_out_as_it_arrives_and_the_final_comes_back():
    events, speech_end, pushed, conn = await _stream(PromptDeepgramSTT, seconds=4.0)
    # one websocket message per 20 ms frame, none held back to fill a 50 ms chunk
    assert conn.audio_messages == [FRAME_BYTES] * pushed
    finals = _finals(events)
    assert [text for _, text in finals] == [LINE]
    # the fake answers 150 ms after the speech ended in the audio it received
    assert 0.14 <= finals[0][0] - speech_end <= 0.3
    assert conn.control_messages[-1] == "CloseStream" and conn.close_reason == "close_stream"
    assert conn.param("mip_opt_out") == "true" and conn.param("sample_rate") == str(RATE)
    # usage: every second of audio sent is reported (plus the websocket's idle lifetime,
    # which Deepgram bills too)
    usage = sum(
        ev.recognition_usage.audio_duration
        for _, ev in events
        if ev.type == SpeechEventType.RECOGNITION_USAGE and ev.recognition_usage is not None
    )
    assert usage >= pushed * 0.02 - 1e-6


async def test_the_stock_plugin_cuts_50_ms_chunks_which_is_why_we_do_not_use_it():
    _, _, pushed, conn = await _stream(deepgram.STT, seconds=1.0)
    assert set(conn.audio_messages[:-1]) == {FRAME_BYTES * 5 // 2}
    assert sum(conn.audio_messages) == pushed * FRAME_BYTES


async def test_flush_sends_finalize_and_gets_the_words_at_once():
    events, _, pushed, conn = await _stream(PromptDeepgramSTT, seconds=10, flush_at=1.0)
    assert "Finalize" in conn.control_messages
    assert sum(conn.audio_messages) == pushed * FRAME_BYTES  # nothing held back or lost
    finalized = [m for m in conn.results(final=True) if m["from_finalize"]]
    assert finalized and finalized[0]["channel"]["alternatives"][0]["transcript"] == LINE
    assert [text for _, text in _finals(events)][:1] == [LINE]
