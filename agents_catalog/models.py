"""Typed model of a persona file.

Every model forbids unknown fields: a typo in a persona file must stop start-up with the
file and field named, not silently drop a setting sales thought they had changed.
"""

from __future__ import annotations

import re
from datetime import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Language = Literal["fr", "en"]

# The tools the worker knows how to run over a persona's demo data. A persona may only
# declare tools from this list; the worker implements each of them (agent/tools.py).
ToolName = Literal[
    "find_listings",
    "check_visit_slot",
    "book_visit",
    "take_message",
    "transfer_to_human",
    "report_incident",
    "end_call",
]

PERSONA_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,40}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VoiceChoice(Strict):
    """OpenAI TTS settings for the persona."""

    model: str = "gpt-4o-mini-tts"
    voice: str = "alloy"
    # Style direction passed to gpt-4o-mini-tts (ignored by tts-1).
    style: str | None = None
    speed: Annotated[float, Field(ge=0.5, le=2.0)] = 1.0


class LLMChoice(Strict):
    model: str = "gpt-4.1-mini"
    temperature: Annotated[float, Field(ge=0.0, le=1.5)] = 0.6


class STTChoice(Strict):
    model: str = "nova-3"
    # Words the recogniser should expect (street names, agency name...).
    keyterms: list[str] = Field(default_factory=list)


class Agency(Strict):
    name: str
    city: str
    address: str
    opening_hours: str
    phone_display: str = Field(description="Shown in the demo, never dialled.")


class Listing(Strict):
    ref: Annotated[str, Field(pattern=r"^[A-Z0-9-]{2,12}$")]
    transaction: Literal["sale", "rent"]
    kind: Literal["apartment", "house", "studio", "loft", "office", "parking"]
    city: str
    district: str
    rooms: Annotated[int, Field(ge=0, le=20)]
    bedrooms: Annotated[int, Field(ge=0, le=15)]
    surface_m2: Annotated[float, Field(gt=0, le=2000)]
    price_eur: Annotated[int, Field(gt=0)] = Field(
        description="Sale price, or monthly rent including charges for a rental."
    )
    features: list[str] = Field(default_factory=list)
    summary: str


class VisitSlot(Strict):
    """A free visit slot, relative to the day of the call so the demo never goes stale."""

    id: Annotated[str, Field(pattern=r"^[A-Z0-9-]{2,12}$")]
    listing_ref: str
    day_offset: Annotated[int, Field(ge=0, le=30)]
    start: time
    duration_min: Annotated[int, Field(ge=10, le=180)] = 30
    taken: bool = False


class IncidentType(Strict):
    code: Annotated[str, Field(pattern=r"^[a-z_]{2,30}$")]
    label: str
    urgency: Literal["emergency", "urgent", "normal"]
    advice: str = Field(description="What the caller should do right now.")
    response_time: str = Field(description="When someone will come, in the persona's language.")


class Building(Strict):
    ref: Annotated[str, Field(pattern=r"^[A-Z0-9-]{2,12}$")]
    address: str
    caretaker: str | None = None


class DemoData(Strict):
    agency: Agency
    listings: list[Listing] = Field(default_factory=list)
    visit_slots: list[VisitSlot] = Field(default_factory=list)
    incident_types: list[IncidentType] = Field(default_factory=list)
    buildings: list[Building] = Field(default_factory=list)
    transfer_departments: list[str] = Field(
        default_factory=list, description="Teams a caller can (pretend to) be transferred to."
    )

    @model_validator(mode="after")
    def _references_resolve(self) -> DemoData:
        refs = [listing.ref for listing in self.listings]
        if len(set(refs)) != len(refs):
            raise ValueError("listing refs must be unique")
        slot_ids = [slot.id for slot in self.visit_slots]
        if len(set(slot_ids)) != len(slot_ids):
            raise ValueError("visit slot ids must be unique")
        for slot in self.visit_slots:
            if slot.listing_ref not in refs:
                raise ValueError(f"visit slot {slot.id} names unknown listing {slot.listing_ref}")
        return self


# Which demo data each tool needs: a persona declaring a tool without its data is a
# catalogue error caught at load time, not a tool failing in front of a prospect.
TOOL_NEEDS: dict[str, tuple[str, ...]] = {
    "find_listings": ("listings",),
    "check_visit_slot": ("listings", "visit_slots"),
    "book_visit": ("listings", "visit_slots"),
    "report_incident": ("incident_types",),
    "transfer_to_human": ("transfer_departments",),
}


class Persona(Strict):
    id: str
    display_name: Annotated[str, Field(min_length=2, max_length=80)]
    language: Language
    pitch: Annotated[str, Field(min_length=10, max_length=160)]
    description: Annotated[str, Field(min_length=10, max_length=600)]
    tags: list[Annotated[str, Field(min_length=1, max_length=30)]] = Field(max_length=8)
    enabled: bool = True
    featured: bool = False
    order: Annotated[int, Field(ge=0, le=10_000)]
    max_duration_s: Annotated[int, Field(ge=30, le=1800)] | None = Field(
        default=None, description="Shorter than the policy's maximum if set; never longer."
    )
    instructions: Annotated[str, Field(min_length=50)]
    greeting: Annotated[str, Field(min_length=5, max_length=400)]
    voice: VoiceChoice = VoiceChoice()
    llm: LLMChoice = LLMChoice()
    stt: STTChoice = STTChoice()
    tools: list[ToolName]
    demo_data: DemoData

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not PERSONA_ID.match(value):
            raise ValueError("must be lowercase letters, digits and dashes (2-41 chars)")
        return value

    @field_validator("tools")
    @classmethod
    def _end_call_always(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("tools must not repeat")
        if "end_call" not in value:
            raise ValueError("every persona must be able to end the call (end_call)")
        return value

    @model_validator(mode="after")
    def _tools_have_data(self) -> Persona:
        for tool in self.tools:
            for needed in TOOL_NEEDS.get(tool, ()):
                if not getattr(self.demo_data, needed):
                    raise ValueError(f"tool {tool} needs demo_data.{needed}")
        return self

    def public_card(self, max_duration_s: int) -> dict[str, object]:
        """What the browser may see: never the instructions or the demo data internals."""
        return {
            "id": self.id,
            "display_name": self.display_name,
            "language": self.language,
            "pitch": self.pitch,
            "description": self.description,
            "tags": list(self.tags),
            "featured": self.featured,
            "order": self.order,
            "max_duration_s": max_duration_s,
        }
