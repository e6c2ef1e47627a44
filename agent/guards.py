"""Guards of a live call: its maximum duration and a silent line.

Maximum duration: a spoken warning `max_duration_warning_s` before the end, then at the
end the current speech is cut, a goodbye is said and the call hangs up. Silence: when the
session marks the user away (AgentSession's `user_away_timeout`: neither side spoke for
that long) the agent checks in once; if the user is still away the same time after the
check-in was said, it says goodbye and hangs up. Anything the user says resets it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from livekit.agents import AgentSession
from livekit.agents.voice.events import UserStateChangedEvent

from agent.conversation import GuardTimings, Phrases
from agent.ending import EndReason

log = logging.getLogger("agent.guards")


class EndsCalls(Protocol):
    """What the guards need of a call (agent.call.Call): whether it is already ending, and
    a way to end it. Narrow so that guards and call do not import each other."""

    @property
    def ending(self) -> bool: ...

    def hang_up(
        self, reason: EndReason, *, goodbye: str | None, interrupt: bool = False
    ) -> None: ...


class CallGuards:
    def __init__(
        self,
        session: AgentSession[Any],
        call: EndsCalls,
        session_id: str,
        phrases: Phrases,
        timings: GuardTimings,
        max_duration_s: float,
    ) -> None:
        self._session = session
        self._call = call
        self._session_id = session_id
        self._phrases = phrases
        self._timings = timings
        self._max_duration_s = max_duration_s
        self._timers: list[asyncio.TimerHandle] = []
        self._checked_in = False
        self._away_timer: asyncio.TimerHandle | None = None
        self._listening = False
        self.warned = False
        self.checkins = 0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        warn_at = self._max_duration_s - self._timings.max_duration_warning_s
        if self._timings.max_duration_warning_s > 0 and warn_at > 0:
            self._timers.append(loop.call_later(warn_at, self._warn))
        self._timers.append(loop.call_later(self._max_duration_s, self._time_up))
        self._session.on("user_state_changed", self._on_user_state)
        self._listening = True

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._cancel_away_timer()
        if self._listening:
            self._listening = False
            self._session.off("user_state_changed", self._on_user_state)

    def user_spoke(self) -> None:
        self._checked_in = False
        self._cancel_away_timer()

    def _cancel_away_timer(self) -> None:
        if self._away_timer is not None:
            self._away_timer.cancel()
            self._away_timer = None

    def _warn(self) -> None:
        if self._call.ending:
            return
        self.warned = True
        log.info("max duration warning", extra={"session_id": self._session_id})
        try:
            self._session.say(self._phrases.duration_warning, allow_interruptions=False)
        except RuntimeError:
            pass  # the session closed meanwhile

    def _time_up(self) -> None:
        self._call.hang_up(
            EndReason.MAX_DURATION, goodbye=self._phrases.duration_goodbye, interrupt=True
        )

    def _on_user_state(self, ev: UserStateChangedEvent) -> None:
        if ev.new_state == "speaking":
            self.user_spoke()
            return
        if ev.new_state != "away" or self._call.ending or self._checked_in:
            return
        self._checked_in = True
        self.checkins += 1
        log.info("user away, checking in", extra={"session_id": self._session_id})
        try:
            handle = self._session.say(self._phrases.silence_checkin)
        except RuntimeError:
            return  # the session closed meanwhile
        # The session stays "away" until the user speaks; the same silence again after
        # the check-in was said ends the call.
        handle.add_done_callback(lambda _: self._arm_away_timer())

    def _arm_away_timer(self) -> None:
        if not self._checked_in or self._call.ending:
            return
        self._cancel_away_timer()
        loop = asyncio.get_running_loop()
        self._away_timer = loop.call_later(self._timings.user_away_timeout_s, self._still_away)

    def _still_away(self) -> None:
        self._away_timer = None
        if self._checked_in and self._session.user_state == "away":
            self._call.hang_up(EndReason.SILENCE, goodbye=self._phrases.silence_goodbye)
