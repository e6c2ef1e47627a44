"""Put one call together: session, persona agent, tools, guards and recorder.

The worker's entrypoint, the text preview, the tests and the benchmark all build a call
here, each passing its own providers (real plugins, or scripted/instant ones) so what
they exercise is the code a live call runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from livekit.agents import AgentSession, vad

from agent.call import Call
from agent.connection import ConnectionTracker
from agent.conversation import Conversation, GuardTimings, RecapWords
from agent.desk import DemoDesk
from agent.dispatch import JobSpec
from agent.instructions import persona_instructions
from agent.persona_agent import PersonaAgent
from agent.providers import build_session
from agent.recap import build_recap
from agent.recording import SessionRecorder
from agent.tools import build_tools

# The demo agencies are in France: "tomorrow" is tomorrow in Paris.
AGENCY_TZ = "Europe/Paris"


def agency_today() -> date:
    try:
        return datetime.now(ZoneInfo(AGENCY_TZ)).date()
    except ZoneInfoNotFoundError:  # no tz database in the image: UTC is at most a day off
        return datetime.now().date()


@dataclass
class CallParts:
    session: AgentSession[Any]
    call: Call
    agent: PersonaAgent
    desk: DemoDesk
    recap_words: RecapWords

    def recap(self, end_reason: str) -> dict[str, Any]:
        """The visitor's recap of this call so far (agent.recap)."""
        desk = self.desk
        return build_recap(desk.actions, desk.persona, desk.calendar, self.recap_words, end_reason)


def assemble_call(
    spec: JobSpec,
    conversation: Conversation,
    *,
    stt: Any,
    llm: Any,
    tts: Any,
    vad_model: vad.VAD | None,
    timings: GuardTimings | None = None,
    recorder: SessionRecorder | None = None,
    connection: ConnectionTracker | None = None,
    on_finished: Callable[[Call], Awaitable[None]] | None = None,
    today: date | None = None,
    llm_max_retry: int = 1,
    guards: bool = True,
) -> CallParts:
    persona = spec.persona
    lang = persona.language
    timings = timings or conversation.guards
    today = today or agency_today()
    session = build_session(
        stt=stt,
        llm=llm,
        tts=tts,
        vad_model=vad_model,
        turns=conversation.turns,
        # Without guards (the text preview) nobody is "away" while typing.
        user_away_timeout_s=timings.user_away_timeout_s if guards else None,
        llm_max_retry=llm_max_retry,
    )
    call = Call(
        session,
        spec,
        conversation.phrases[lang],
        timings,
        recorder,
        connection=connection,
        on_finished=on_finished,
        guards=guards,
    )
    desk = DemoDesk(persona, today, conversation.calendar[lang])
    agent = PersonaAgent(
        persona,
        persona_instructions(persona, conversation, today),
        build_tools(persona, desk, call),
    )
    return CallParts(session, call, agent, desk, conversation.recap[lang])
