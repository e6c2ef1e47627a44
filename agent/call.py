"""One live call: how it ends, and the record it leaves.

Every way a call can end goes through `Call.hang_up` (the end_call tool, the guards) or
the session's close event (the caller hanging up, a job shutdown, an error); the first
reason wins. When the session is closed the call records its end (times, duration,
reason, turns, usage, connection data), which also releases the concurrency slot and
refunds the unused minutes, then runs `on_finished` (the worker deletes the room there).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from livekit.agents import AgentSession, RunContext
from livekit.agents.metrics.usage import LLMModelUsage, STTModelUsage, TTSModelUsage
from livekit.agents.voice.events import (
    CloseEvent,
    CloseReason,
    ConversationItemAddedEvent,
    ErrorEvent,
)
from livekit.agents.voice.speech_handle import SpeechHandle

from agent.connection import ConnectionTracker
from agent.conversation import GuardTimings, Phrases
from agent.dispatch import JobSpec
from agent.ending import EndReason
from agent.guards import CallGuards
from agent.recording import SessionRecorder

log = logging.getLogger("agent.call")

__all__ = ["Call", "EndReason", "spoke_this_step"]


_FROM_CLOSE = {
    CloseReason.PARTICIPANT_DISCONNECTED: EndReason.USER_HANGUP,
    CloseReason.ERROR: EndReason.ERROR,
    CloseReason.JOB_SHUTDOWN: EndReason.SHUTDOWN,
    CloseReason.USER_INITIATED: EndReason.SHUTDOWN,
    CloseReason.TASK_COMPLETED: EndReason.END_CALL,
}


def spoke_this_step(context: RunContext[Any]) -> bool:
    """Whether the model said something in the step that called this tool (after the
    last tool output of the turn): the personas say goodbye, then call end_call."""
    for item in reversed(context.speech_handle.chat_items):
        if item.type == "function_call_output":
            return False
        if (
            item.type == "message"
            and item.role == "assistant"
            and (item.text_content or "").strip()
        ):
            return True
    return False


class Call:
    def __init__(
        self,
        session: AgentSession[Any],
        spec: JobSpec,
        phrases: Phrases,
        timings: GuardTimings,
        recorder: SessionRecorder | None,
        *,
        connection: ConnectionTracker | None = None,
        on_finished: Callable[[Call], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
        guards: bool = True,
    ) -> None:
        self.session = session
        self.spec = spec
        self.phrases = phrases
        self.timings = timings
        self.connection = connection or ConnectionTracker()
        self.end_reason: EndReason | None = None
        self.turns = 0
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.record: dict[str, str] = {}
        self.finished = asyncio.Event()
        self._recorder = recorder
        self._on_finished = on_finished
        self._clock = clock
        self.guards = CallGuards(
            session, self, spec.session_id, phrases, timings, spec.max_duration_s
        )
        self._guards_enabled = guards
        self._hard_stop: asyncio.TimerHandle | None = None
        self._finalize_task: asyncio.Task[None] | None = None

    @property
    def ending(self) -> bool:
        return self.end_reason is not None

    def begin(self) -> None:
        """Call just before session.start(): the clock, the start record, the guards."""
        self.started_at = self._clock()
        join_delay = self.started_at - self.spec.issued_at if self.spec.issued_at else None
        if self._recorder is not None:
            self._recorder.started(started_at=self.started_at, join_delay_s=join_delay)
        self.session.on("conversation_item_added", self._on_item)
        self.session.on("error", self._on_error)
        self.session.on("close", self._on_close)
        if self._guards_enabled:
            self.guards.start()
        log.info(
            "call started",
            extra={
                "session_id": self.spec.session_id,
                "persona": self.spec.persona.id,
                "max_duration_s": self.spec.max_duration_s,
                "join_delay_s": round(join_delay, 3) if join_delay is not None else None,
            },
        )

    # --- ending ------------------------------------------------------------------------

    def hang_up(
        self,
        reason: EndReason,
        *,
        goodbye: str | None,
        interrupt: bool = False,
        after: SpeechHandle | None = None,
    ) -> None:
        """End the call for `reason`: optionally cut the current speech, say `goodbye`,
        then close the session once it is said (or `hangup_grace_s` later at most)."""
        if self.end_reason is not None:
            return
        self.end_reason = reason
        self.guards.stop()
        log.info("hanging up", extra={"session_id": self.spec.session_id, "reason": reason.value})
        if interrupt:
            try:
                self.session.interrupt(force=True)
            except RuntimeError:
                pass  # nothing to interrupt, or the session is already closing
        if after is not None and not after.done():
            after.add_done_callback(lambda _: self._close(goodbye))
        else:
            self._close(goodbye)

    def _close(self, goodbye: str | None) -> None:
        if goodbye:
            try:
                self.session.say(goodbye, allow_interruptions=False)
            except RuntimeError:
                pass  # the session is already closing: nothing more can be said
        self.session.shutdown(drain=True)
        loop = asyncio.get_running_loop()
        self._hard_stop = loop.call_later(self.timings.hangup_grace_s, self._force_stop)

    def start_failed(self) -> None:
        """The session never started (room or provider setup failed): record the end."""
        if self.end_reason is None:
            self.end_reason = EndReason.ERROR
        self.guards.stop()
        if self._finalize_task is None:
            self._finalize_task = asyncio.create_task(self._finalize(), name="call-finalize")

    def caller_left(self) -> None:
        """The visitor left the room. While hanging up, a goodbye has nobody left to hear it:
        cut it now, so the end is recorded at once and not `hangup_grace_s` later, when the
        room's departure timeout may already have let LiveKit's webhook close a healthy call
        as abandoned. Otherwise RoomIO's close on disconnect ends the call (user_hangup)."""
        if self.end_reason is not None and not self.finished.is_set():
            try:
                self.session.interrupt(force=True)
            except RuntimeError:
                pass  # nothing being said, or the session is already closing

    def _force_stop(self) -> None:
        # A goodbye that cannot finish (stuck TTS or output) is cut so the session closes.
        if not self.finished.is_set():
            log.warning("goodbye did not finish in time, cutting it",
                        extra={"session_id": self.spec.session_id})  # fmt: skip
            try:
                self.session.interrupt(force=True)
            except RuntimeError:
                pass

    async def end_call_from_tool(self, context: RunContext[Any]) -> None:
        await context.wait_for_playout()
        goodbye = None if spoke_this_step(context) else self.phrases.goodbye
        self.hang_up(EndReason.END_CALL, goodbye=goodbye, after=context.speech_handle)

    # --- events ------------------------------------------------------------------------

    def _on_item(self, ev: ConversationItemAddedEvent) -> None:
        item = ev.item
        if getattr(item, "type", None) == "message" and getattr(item, "role", None) == "user":
            self.turns += 1
            self.guards.user_spoke()

    def _on_error(self, ev: ErrorEvent) -> None:
        error: Any = ev.error
        if getattr(error, "recoverable", True):
            return
        log.error(
            "unrecoverable provider error, ending the call",
            extra={"session_id": self.spec.session_id, "error_type": getattr(error, "type", "")},
        )
        # A dead LLM or STT still leaves the voice: say why we hang up. A dead TTS does not.
        goodbye = None if getattr(error, "type", "") == "tts_error" else self.phrases.error_goodbye
        self.hang_up(EndReason.ERROR, goodbye=goodbye, interrupt=True)

    def _on_close(self, ev: CloseEvent) -> None:
        if self.end_reason is None:
            self.end_reason = EndReason.ERROR if ev.error else _FROM_CLOSE[ev.reason]
        self.guards.stop()
        if self._hard_stop is not None:
            self._hard_stop.cancel()
        if self._finalize_task is None:
            self._finalize_task = asyncio.create_task(self._finalize(), name="call-finalize")

    def usage_fields(self) -> dict[str, str]:
        prompt = completion = chars = 0
        audio_s = 0.0
        for usage in self.session.usage.model_usage:
            if isinstance(usage, LLMModelUsage):
                prompt += usage.input_tokens
                completion += usage.output_tokens
            elif isinstance(usage, STTModelUsage):
                audio_s += usage.audio_duration
            elif isinstance(usage, TTSModelUsage):
                chars += usage.characters_count
        return {
            "llm_prompt_tokens": str(prompt),
            "llm_completion_tokens": str(completion),
            "stt_audio_s": f"{audio_s:.1f}",
            "tts_chars": str(chars),
        }

    async def _finalize(self) -> None:
        try:
            self.ended_at = self._clock()
            duration = max(0.0, self.ended_at - (self.started_at or self.ended_at))
            reason = self.end_reason or EndReason.SHUTDOWN
            self.record = {
                "status": "ended",
                "ended_at": f"{self.ended_at:.3f}",
                "duration_s": f"{duration:.1f}",
                "end_reason": reason.value,
                "turns": str(self.turns),
                **self.usage_fields(),
                "connection_quality": self.connection.summary(),
                "reconnects": str(self.connection.reconnects),
            }
            if self._recorder is not None:
                self._recorder.ended(used_s=duration, reason=reason.value, fields=self.record)
            log.info(
                "call ended",
                extra={"session_id": self.spec.session_id, "end_reason": reason.value,
                       "duration_s": round(duration, 1), "turns": self.turns},
            )  # fmt: skip
            if self._on_finished is not None:
                await self._on_finished(self)
        finally:
            self.finished.set()
