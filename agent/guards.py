"""Guards of a live call: its maximum duration and a silent line.

Maximum duration: a spoken warning `max_duration_warning_s` before the end, then at the
end the current speech is cut, a goodbye is said and the call hangs up. Silence: when the
session marks the user away (AgentSession's `user_away_timeout`: neither side spoke for
that long) the agent checks in once; if the user is still away after that, it says
goodbye and hangs up. Anything the user says resets the check-in.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from livekit.agents import AgentSession
from livekit.agents.voice.events import UserStateChangedEvent

from agent.conversation import GuardTimings, Phrases
from agent.ending import EndReason

if TYPE_CHECKING:
    from agent.call import Call

log = logging.getLogger("agent.guards")


class CallGuards:
    def __init__(
        self,
        session: AgentSession[Any],
        call: Call,
        phrases: Phrases,
        timings: GuardTimings,
        max_duration_s: float,
    ) -> None:
        self._session = session
        self._call = call
        self._phrases = phrases
        self._timings = timings
        self._max_duration_s = max_duration_s
        self._timers: list[asyncio.TimerHandle] = []
        self._checked_in = False
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
        if self._listening:
            self._listening = False
            self._session.off("user_state_changed", self._on_user_state)

    def user_spoke(self) -> None:
        self._checked_in = False

    def _warn(self) -> None:
        if self._call.ending:
            return
        self.warned = True
        log.info("max duration warning", extra={"session_id": self._call.spec.session_id})
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
            self._checked_in = False
            return
        if ev.new_state != "away" or self._call.ending:
            return
        if not self._checked_in:
            self._checked_in = True
            self.checkins += 1
            log.info("user away, checking in", extra={"session_id": self._call.spec.session_id})
            try:
                self._session.say(self._phrases.silence_checkin)
            except RuntimeError:
                pass
            return
        self._call.hang_up(EndReason.SILENCE, goodbye=self._phrases.silence_goodbye)
