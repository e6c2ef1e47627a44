"""The system prompt of a persona: its own instructions, then the demo framing and the
agency facts taken from its demo data (so a fact changed in the persona file is changed
everywhere the agent uses it, with nothing copied by hand)."""

from __future__ import annotations

from datetime import date

from agent.conversation import Conversation
from agents_catalog.models import Persona


def persona_instructions(persona: Persona, conversation: Conversation, today: date) -> str:
    lang = persona.language
    data = persona.demo_data
    agency = data.agency
    departments = ""
    if data.transfer_departments:
        departments = conversation.departments[lang].format(
            names=", ".join(data.transfer_departments)
        )
    buildings = ""
    if data.buildings:
        buildings = conversation.buildings[lang].format(
            names="; ".join(b.address for b in data.buildings)
        )
    framing = conversation.framing[lang].format(
        agency_name=agency.name,
        agency_address=agency.address,
        opening_hours=agency.opening_hours,
        phone_display=agency.phone_display,
        departments=departments,
        buildings=buildings,
        today=conversation.calendar[lang].say(today),
    )
    return persona.instructions.rstrip() + "\n\n" + framing.strip() + "\n"
