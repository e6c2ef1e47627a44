"""The worker's own words (agent/phrases.yaml, sales may reword them) and its tuning
(agent/conversation.yaml, engineers'): the shipped files are complete in both languages with
the placeholders the worker fills, and a broken file is refused with its name and the field,
whichever of the two it is."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from string import Formatter
from typing import Any

import pytest
import yaml

from agent.conversation import (
    DEFAULT_FILE,
    PHRASES_FILE,
    ConversationError,
    load_conversation,
)

LANGUAGES = ("fr", "en")

# Said as written by the guards and the call's ending: no placeholder.
SPOKEN = (
    "goodbye",
    "duration_warning",
    "duration_goodbye",
    "silence_checkin",
    "silence_goodbye",
    "error_goodbye",
)
# What agent/recap.py fills in each recap line: every one carries a fact the visitor checks.
RECAP_NEEDS = {
    "time": {"hour", "minute"},
    "viewing": {"kind", "place", "day", "time", "reference", "name", "phone"},
    "recipient_team": {"department"},
    "message": {"recipient", "subject", "name", "phone", "opening_hours"},
    "message_subject": {"subject"},
    "incident": {"incident", "at", "reference", "response_time", "name", "phone"},
    "incident_at": {"address"},
    "transfer": {"department"},
}
LISTING_KINDS = {"apartment", "house", "studio", "loft", "office", "parking"}
# What agent/instructions.py fills in the prompt's framing.
FRAMING_NEEDS = {
    "framing": {"agency_name", "agency_address", "opening_hours", "phone_display"}
    | {"departments", "buildings", "today"},
    "departments": {"names"},
    "buildings": {"names"},
}


def _placeholders(text: str) -> set[str]:
    return {field for _, field, _, _ in Formatter().parse(text) if field is not None}


def _shipped(path: Path) -> dict[str, Any]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(raw, dict)
    return raw


def test_the_shipped_phrases_have_every_line_in_both_languages_with_its_placeholders():
    raw = _shipped(PHRASES_FILE)
    assert set(raw) == {"phrases", "calendar", "recap"}
    for lang in LANGUAGES:
        spoken = raw["phrases"][lang]
        assert set(spoken) == set(SPOKEN), lang
        for name in SPOKEN:
            assert spoken[name].strip() and _placeholders(spoken[name]) == set(), (lang, name)
        recap = raw["recap"][lang]
        assert set(recap) == set(RECAP_NEEDS) | {"kinds"}, lang
        for name, needed in RECAP_NEEDS.items():
            assert _placeholders(recap[name]) == needed, (lang, name)
        assert set(recap["kinds"]) == LISTING_KINDS, lang
        calendar = raw["calendar"][lang]
        assert (len(calendar["weekdays"]), len(calendar["months"])) == (7, 12), lang
    # And the worker takes them as they are.
    conversation = load_conversation()
    assert conversation.phrases["fr"].silence_checkin == raw["phrases"]["fr"]["silence_checkin"]
    assert conversation.recap["en"].viewing == raw["recap"]["en"]["viewing"]


def test_the_shipped_tuning_holds_no_phrase_and_the_framing_its_placeholders():
    raw = _shipped(DEFAULT_FILE)
    assert set(raw) == {"guards", "turns", "framing", "departments", "buildings"}
    for name, needed in FRAMING_NEEDS.items():
        for lang in LANGUAGES:
            assert _placeholders(raw[name][lang]) == needed, (name, lang)


def _write_both(tmp_path: Path) -> tuple[Path, Path]:
    """Copies of the shipped files under their own names (the error must say which)."""
    tuning = tmp_path / "conversation.yaml"
    phrases = tmp_path / "phrases.yaml"
    tuning.write_text(DEFAULT_FILE.read_text(encoding="utf-8"), encoding="utf-8")
    phrases.write_text(PHRASES_FILE.read_text(encoding="utf-8"), encoding="utf-8")
    return tuning, phrases


def _refusal(tmp_path: Path, broken: str, change: Callable[[dict[str, Any]], object]) -> str:
    """The error for the shipped files with `broken` (one of the two names) changed."""
    tuning, phrases = _write_both(tmp_path)
    path = tmp_path / broken
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(raw)
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConversationError) as raised:
        load_conversation(tuning, phrases)
    message = str(raised.value)
    assert message.startswith(f"{path}: ")
    other = phrases if path == tuning else tuning
    assert other.name not in message
    return message


@pytest.mark.parametrize(
    ("change", "error"),
    [(lambda r: r["phrases"]["en"].pop("goodbye"), "phrases.en.goodbye: Field required"),
     (lambda r: r["phrases"].pop("fr"), "phrases: missing language(s) fr"),
     (lambda r: r["phrases"]["en"].update(silence_checkin="Still there, {name}?"),
      "silence_checkin: unknown placeholder(s) name"),
     (lambda r: r["recap"]["fr"]["kinds"].pop("loft"),
      "recap.fr: Value error, kinds: no word for loft"),
     (lambda r: r["recap"]["en"].update(viewing="Booked {when}"),
      "viewing: unknown placeholder(s) when"),
     (lambda r: r["recap"]["fr"].update(viewing="Visite réservée le {day} à {time}."),
      "viewing: missing placeholder(s) kind, name, phone, place, reference"),
     (lambda r: r["recap"].pop("en"), "recap: missing language(s) en"),
     (lambda r: r["calendar"]["en"]["weekdays"].pop(),
      "calendar.en.weekdays: List should have at least 7"),
     (lambda r: r.update(greeting={"en": "Hello"}), "greeting: Extra inputs are not permitted")],
)  # fmt: skip
def test_a_broken_phrases_file_is_refused_with_its_name_and_the_field(tmp_path, change, error):
    assert error in _refusal(tmp_path, "phrases.yaml", change)


def test_a_phrases_file_that_is_not_yaml_or_not_there_is_refused_with_its_name(tmp_path):
    tuning, phrases = _write_both(tmp_path)
    phrases.write_text('phrases:\n  en: {goodbye: "Bye"\n', encoding="utf-8")
    with pytest.raises(ConversationError, match=r"phrases\.yaml: while parsing"):
        load_conversation(tuning, phrases)
    phrases.write_text("", encoding="utf-8")
    with pytest.raises(ConversationError, match=r"phrases\.yaml: \(file\): Input should be"):
        load_conversation(tuning, phrases)
    phrases.unlink()
    with pytest.raises(ConversationError, match=r"phrases\.yaml: .*No such file"):
        load_conversation(tuning, phrases)


@pytest.mark.parametrize(
    ("change", "error"),
    [(lambda r: r["turns"].update(vad_block_ms=500),
      "turns.vad_block_ms: Input should be less than or equal to 200"),
     (lambda r: r["framing"].update(en="Demo. Today is {today}."),
      "framing.en: missing placeholder(s) agency_address"),
     (lambda r: r.update(phrases={}), "phrases: Extra inputs are not permitted")],
)  # fmt: skip
def test_a_broken_tuning_file_is_refused_with_its_name_and_the_field(tmp_path, change, error):
    assert error in _refusal(tmp_path, "conversation.yaml", change)
