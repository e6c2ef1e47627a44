"""The persona as a LiveKit Agent: its instructions, its tools, its greeting said at once."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from livekit.agents import Agent

from agents_catalog.models import Persona

log = logging.getLogger("agent.persona_agent")


class PersonaAgent(Agent):
    def __init__(
        self,
        persona: Persona,
        instructions: str,
        tools: list[Any],
        *,
        before_greeting: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(instructions=instructions, tools=tools)
        self.persona = persona
        # In a room: lets what the visitor said before the agent joined reach the session
        # first (agent.early_audio).
        self.before_greeting = before_greeting

    async def on_enter(self) -> None:
        # The greeting is the persona's own text, spoken straight away: no LLM round trip
        # stands between the caller joining and the first word.
        if self.before_greeting is not None:
            try:
                await self.before_greeting()
            except Exception as exc:  # never a reason to stay silent
                log.warning("greeting without waiting for the early audio",
                            extra={"error": type(exc).__name__})  # fmt: skip
        self.session.say(self.persona.greeting)
