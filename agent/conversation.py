"""What the worker says on its own and when, typed and validated, from two data files.

The greeting and the answers come from the persona and the LLM; the lines here are the
worker's own: the duration warning, the silence check-in, the goodbyes, the recap. They are
data, per language, so a French persona never says an English goodbye, and they live in
phrases.yaml, apart from the tuning (conversation.yaml: guard timings, turns and audio, the
demo framing of the prompt), so sales can reword them without touching an engineer's
setting. Both load into one `Conversation`; a wrong file is refused with its name and the
field.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from pathlib import Path
from string import Formatter
from typing import Annotated, Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agents_catalog.models import Language, Listing

DEFAULT_FILE = Path(__file__).resolve().parent / "conversation.yaml"
PHRASES_FILE = Path(__file__).resolve().parent / "phrases.yaml"
LANGUAGES: tuple[Language, ...] = ("fr", "en")


class ConversationError(ValueError):
    """conversation.yaml or phrases.yaml is wrong; the message names the file and the field."""


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


# "Placeholder" here is a str.format slot in a phrase (`{reference}`), which the worker fills
# when it speaks or sends the recap: not a stub. These checks keep sales' rewording honest.
def placeholders(text: str) -> set[str]:
    return {field for _, field, _, _ in Formatter().parse(text) if field is not None}


def check_placeholders(name: str, text: str, needed: frozenset[str]) -> None:
    """`text` uses exactly `needed`: one missing would drop a fact, an unknown one fails."""
    used = placeholders(text)
    if unknown := sorted(used - needed):
        raise ValueError(f"{name}: unknown placeholder(s) {', '.join(unknown)}")
    if missing := sorted(needed - used):
        raise ValueError(f"{name}: missing placeholder(s) {', '.join(missing)}")


class Phrases(_Strict):
    """Said as written (session.say), so a {placeholder} would be read out: none allowed."""

    goodbye: Annotated[str, Field(min_length=2)]
    duration_warning: Annotated[str, Field(min_length=2)]
    duration_goodbye: Annotated[str, Field(min_length=2)]
    silence_checkin: Annotated[str, Field(min_length=2)]
    silence_goodbye: Annotated[str, Field(min_length=2)]
    error_goodbye: Annotated[str, Field(min_length=2)]

    @model_validator(mode="after")
    def _said_as_written(self) -> Phrases:
        for name in type(self).model_fields:
            check_placeholders(name, getattr(self, name), frozenset())
        return self


# The placeholders each recap line takes, all of them (agent/recap.py fills them).
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
        for name, needed in RECAP_FIELDS.items():
            check_placeholders(name, getattr(self, name), needed)
        return self


class Calendar(_Strict):
    weekdays: Annotated[list[str], Field(min_length=7, max_length=7)]
    months: Annotated[list[str], Field(min_length=12, max_length=12)]

    def say(self, day: date) -> str:
        return f"{self.weekdays[day.weekday()]} {day.day} {self.months[day.month - 1]} {day.year}"


# The placeholders of the prompt's framing texts (agent/instructions.py fills them).
FRAMING_FIELDS: dict[str, frozenset[str]] = {
    "framing": frozenset(
        {"agency_name", "agency_address", "opening_hours", "phone_display"}
        | {"departments", "buildings", "today"}
    ),
    "departments": frozenset({"names"}),
    "buildings": frozenset({"names"}),
}


def _check_languages(model: BaseModel, names: tuple[str, ...]) -> None:
    for name in names:
        missing = [lang for lang in LANGUAGES if lang not in getattr(model, name)]
        if missing:
            raise ValueError(f"{name}: missing language(s) {', '.join(missing)}")


class Tuning(_Strict):
    """conversation.yaml: engineers' settings."""

    guards: GuardTimings
    turns: TurnSettings
    framing: dict[Language, str]
    departments: dict[Language, str]
    buildings: dict[Language, str]

    @model_validator(mode="after")
    def _tuning_complete(self) -> Tuning:
        _check_languages(self, tuple(FRAMING_FIELDS))
        for name, needed in FRAMING_FIELDS.items():
            texts: dict[Language, str] = getattr(self, name)
            for lang, text in texts.items():
                check_placeholders(f"{name}.{lang}", text, needed)
        return self


class PhraseBook(_Strict):
    """phrases.yaml: the words sales may reword."""

    phrases: dict[Language, Phrases]
    calendar: dict[Language, Calendar]
    recap: dict[Language, RecapWords]

    @model_validator(mode="after")
    def _phrases_complete(self) -> PhraseBook:
        _check_languages(self, ("phrases", "calendar", "recap"))
        return self


class Conversation(Tuning, PhraseBook):
    """Both files as one: what callers take, whichever file a field comes from."""


_Part = TypeVar("_Part", Tuning, PhraseBook)


def _load_part(path: Path, model: type[_Part]) -> _Part:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConversationError(f"{path}: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConversationError(f"{path}: {details}") from exc


def load_conversation(path: Path | None = None, phrases: Path | None = None) -> Conversation:
    """conversation.yaml (`path`) and phrases.yaml (`phrases`), the shipped ones by default."""
    tuning = _load_part(path or DEFAULT_FILE, Tuning)
    book = _load_part(phrases or PHRASES_FILE, PhraseBook)
    return Conversation.model_validate({**dict(tuning), **dict(book)})


@lru_cache(maxsize=1)
def default_conversation() -> Conversation:
    return load_conversation()
