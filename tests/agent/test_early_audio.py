"""The greeting waits for what the visitor said before the agent joined (agent.early_audio),
and never stays unsaid: a call assembled as the worker does, with the scripted LLM. The real
path (a pre-connect buffer through livekit-server, heard and answered) is
tests/e2e/test_page_signals.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from livekit import rtc
from livekit.agents.voice.io import AudioInput

from agent.early_audio import FirstFrame
from tests.agent.support import assembled_call, running_session, said, spec_for


async def _greeted_after(
    hold: asyncio.Event | None, fail: bool = False
) -> tuple[list[str], list[str]]:
    """(what was said before `hold` was set, what was said after)."""
    parts, _ = assembled_call("agence-immo-fr")

    async def before_greeting() -> None:
        if fail:
            raise RuntimeError("room is not connected")
        assert hold is not None
        await hold.wait()

    parts.agent.before_greeting = before_greeting
    async with running_session(parts):
        await asyncio.sleep(0.3)
        before = said(parts)
        if hold is not None:
            hold.set()
        for _ in range(200):
            if said(parts):
                break
            await asyncio.sleep(0.01)
        return before, said(parts)


async def test_the_greeting_waits_for_the_early_audio_then_is_said():
    before, after = await _greeted_after(asyncio.Event())
    greeting = spec_for("agence-immo-fr").persona.greeting
    assert before == [] and after == [greeting]


async def test_a_failed_wait_still_greets():
    before, after = await _greeted_after(None, fail=True)
    assert before == after == [spec_for("agence-immo-fr").persona.greeting]


class _Frames(AudioInput):
    def __init__(self, count: int) -> None:
        super().__init__(label="frames")
        self._frames = iter(rtc.AudioFrame(bytes([i]) * 320, 16000, 1, 160) for i in range(count))

    async def __anext__(self) -> rtc.AudioFrame:
        try:
            return next(self._frames)
        except StopIteration:
            raise StopAsyncIteration from None


async def test_first_frame_passes_every_frame_through_and_notes_the_first():
    gate = FirstFrame(_Frames(3))
    assert not gate.heard.is_set()
    frames: AsyncIterator[rtc.AudioFrame] = gate
    first = await frames.__anext__()
    assert gate.heard.is_set() and bytes(first.data)[:1] == b"\x00"
    rest = [bytes(f.data)[:1] async for f in gate]
    assert rest == [b"\x01", b"\x02"]
