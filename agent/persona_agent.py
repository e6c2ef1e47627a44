"""The persona as a LiveKit Agent: its instructions, its tools, its greeting said at once."""

from __future__ import annotations

from typing import Any

from livekit.agents import Agent

from agents_catalog.models import Persona


class PersonaAgent(Agent):
    def __init__(self, persona: Persona, instructions: str, tools: list[Any]) -> None:
        super().__init__(instructions=instructions, tools=tools)
        self.persona = persona

    async def on_enter(self) -> None:
        # The greeting is the persona's own text, spoken straight away: no LLM round trip
        # stands between the caller joining and the first word.
        self.session.say(self.persona.greeting)
