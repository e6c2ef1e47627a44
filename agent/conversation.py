"""What the worker says on its own and when (conversation.yaml), typed and validated.

The greeting and the answers come from the persona and the LLM; the lines here are the
worker's own: the duration warning, the silence check-in, the goodbyes. They are data so
sales can reword them without touching code, and per language so a French persona never
says an English goodbye.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from pathlib import Path
from string import Formatter
from typing import Annotated, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agents_catalog.models import Language, Listing

DEFAULT_FILE = Path(__file__).resolve().parent / "conversation.yaml"
LANGUAGES: tuple[Language, ...] = ("fr", "en")


class ConversationError(ValueError):
    """conversation.yaml is wrong; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GuardTimings(_Strict):
    """When the guards act. Injectable: tests and benchmarks pass shorter ones."""

    # At most a minute: the spoken warning says "less than a minute" (0 switches it off).
    max_duration_warning_s: Annotated[float, Field(ge=0, le=60)]
    user_away_timeout_s: Annotated[float, Field(gt=0, le=600)]
    hangup_grace_s: Annotated[float, Field(gt=0, le=120)]


class TurnSettings(_Strict):
    turn_detection: Literal["vad", "stt"]
    min_endpointing_delay_s: Annotated[float, Field(ge=0, le=5)]
    max_endpointing_delay_s: Annotated[float, Field(gt=0, le=10)]
    preemptive_generation: bool
    preemptive_tts: bool
    min_interruption_s: Annotated[float, Field(ge=0, le=5)]
    tts_response_format: Literal["pcm", "wav", "mp3", "opus", "aac", "flac"]
    input_frame_ms: Annotated[int, Field(ge=10, le=100)]
    input_sample_rate: Literal[16000, 24000, 48000]
    vad_block_ms: Annotated[int, Field(ge=0, le=200)]
    pre_connect_audio_timeout_s: Annotated[float, Field(gt=0, le=10)]


class Phrases(_Strict):
    goodbye: Annotated[str, Field(min_length=2)]
    duration_warning: Annotated[str, Field(min_length=2)]
    duration_goodbye: Annotated[str, Field(min_length=2)]
    silence_checkin: Annotated[str, Field(min_length=2)]
    silence_goodbye: Annotated[str, Field(min_length=2)]
    error_goodbye: Annotated[str, Field(min_length=2)]


# The placeholders each recap line may use (agent/recap.py fills them).
RECAP_FIELDS: dict[str, frozenset[str]] = {
    "time": frozenset({"hour", "minute"}),
    "viewing": frozenset({"kind", "place", "day", "time", "reference", "name", "phone"}),
    "recipient_team": frozenset({"department"}),
    "message": frozenset({"recipient", "subject", "name", "phone", "opening_hours"}),
    "message_subject": frozenset({"subject"}),
    "incident": frozenset({"incident", "at", "reference", "response_time", "name", "phone"}),
    "incident_at": frozenset({"address"}),
    "transfer": frozenset({"department"}),
}


class RecapWords(_Strict):
    """The visitor's recap lines in one language (agent/recap.py)."""

    kinds: dict[str, str]
    time: str
    viewing: str
    recipient_team: str
    message: str
    message_subject: str
    incident: str
    incident_at: str
    transfer: str

    @model_validator(mode="after")
    def _complete(self) -> RecapWords:
        listing_kinds = set(get_args(Listing.model_fields["kind"].annotation))
        if missing := sorted(listing_kinds - set(self.kinds)):
            raise ValueError(f"kinds: no word for {', '.join(missing)}")
        for name, allowed in RECAP_FIELDS.items():
            used = {f for _, f, _, _ in Formatter().parse(getattr(self, name)) if f is not None}
            if unknown := sorted(used - allowed):
                raise ValueError(f"{name}: unknown placeholder(s) {', '.join(unknown)}")
        return self


class Calendar(_Strict):
    weekdays: Annotated[list[str], Field(min_length=7, max_length=7)]
    months: Annotated[list[str], Field(min_length=12, max_length=12)]

    def say(self, day: date) -> str:
        return f"{self.weekdays[day.weekday()]} {day.day} {self.months[day.month - 1]} {day.year}"


class Conversation(_Strict):
    guards: GuardTimings
    turns: TurnSettings
    framing: dict[Language, str]
    departments: dict[Language, str]
    buildings: dict[Language, str]
    phrases: dict[Language, Phrases]
    calendar: dict[Language, Calendar]
    recap: dict[Language, RecapWords]

    @model_validator(mode="after")
    def _every_language(self) -> Conversation:
        for name in ("framing", "departments", "buildings", "phrases", "calendar", "recap"):
            missing = [lang for lang in LANGUAGES if lang not in getattr(self, name)]
            if missing:
                raise ValueError(f"{name}: missing language(s) {', '.join(missing)}")
        return self


def load_conversation(path: Path | None = None) -> Conversation:
    path = path or DEFAULT_FILE
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConversationError(f"{path}: {exc}") from exc
    try:
        return Conversation.model_validate(raw)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConversationError(f"{path}: {details}") from exc


@lru_cache(maxsize=1)
def default_conversation() -> Conversation:
    return load_conversation()
