"""The persona catalogue: the shipped personas load; a broken file is refused by name."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents_catalog import CatalogError, load_catalog
from agents_catalog.loader import DEFAULT_DIR, load_persona

SHIPPED = {
    "agence-immo-fr": "fr",
    "realty-desk-en": "en",
    "gestion-incidents-fr": "fr",
    "after-hours-en": "en",
}


def shipped(persona_id: str) -> dict[str, Any]:
    data = yaml.safe_load((DEFAULT_DIR / f"{persona_id}.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def write(directory: Path, filename: str, data: object) -> Path:
    path = directory / filename
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_the_four_shipped_personas_load() -> None:
    catalog = load_catalog()
    assert {p.id: p.language for p in catalog} == SHIPPED
    for persona in catalog:
        assert persona.enabled
        assert "end_call" in persona.tools
        assert persona.instructions.strip()
        assert persona.demo_data.agency.name
    # Each persona's data backs the tools it declares (the loader checks it; the shipped
    # files must actually exercise it, not declare nothing).
    assert catalog.get("agence-immo-fr").demo_data.listings  # type: ignore[union-attr]
    assert catalog.get("gestion-incidents-fr").demo_data.incident_types  # type: ignore[union-attr]


def test_showcase_is_enabled_personas_in_order(tmp_path: Path) -> None:
    for persona_id in SHIPPED:
        data = shipped(persona_id)
        if persona_id == "realty-desk-en":
            data["enabled"] = False
        write(tmp_path, f"{persona_id}.yaml", data)
    catalog = load_catalog(tmp_path)
    showcase = [p.id for p in catalog.showcase()]
    assert showcase == ["agence-immo-fr", "gestion-incidents-fr", "after-hours-en"]
    assert catalog.get("realty-desk-en") is not None  # still known, just not shown


def test_public_card_never_carries_the_prompt_or_demo_data() -> None:
    for persona in load_catalog():
        card = persona.public_card(120)
        assert set(card) == {
            "id", "display_name", "language", "pitch", "description", "tags",
            "featured", "order", "max_duration_s",
        }  # fmt: skip
        assert persona.instructions not in str(card)
        assert card["max_duration_s"] == 120


def _unknown_field(data: dict[str, Any]) -> None:
    data["voice"]["pitch_shift"] = 3


def _wrong_type(data: dict[str, Any]) -> None:
    data["order"] = "first"


def _tool_without_data(data: dict[str, Any]) -> None:
    data["demo_data"]["listings"] = []
    data["demo_data"]["visit_slots"] = []


def _bad_id(data: dict[str, Any]) -> None:
    data["id"] = "Agence_Immo!"


def _unknown_tool(data: dict[str, Any]) -> None:
    data["tools"] = [*data["tools"], "send_sms"]


def _no_end_call(data: dict[str, Any]) -> None:
    data["tools"] = [t for t in data["tools"] if t != "end_call"]


def _slot_for_unknown_listing(data: dict[str, Any]) -> None:
    data["demo_data"]["visit_slots"][0]["listing_ref"] = "NOPE-1"


@pytest.mark.parametrize(
    ("mutate", "filename", "expected"),
    [
        (_unknown_field, "agence-immo-fr.yaml", ["voice.pitch_shift", "Extra inputs"]),
        (_wrong_type, "agence-immo-fr.yaml", ["order", "integer"]),
        (_tool_without_data, "agence-immo-fr.yaml", ["needs demo_data.listings"]),
        (_bad_id, "Agence_Immo!.yaml", ["id", "lowercase"]),
        (_unknown_tool, "agence-immo-fr.yaml", ["tools.6", "Input should be"]),
        (_no_end_call, "agence-immo-fr.yaml", ["tools", "end_call"]),
        (_slot_for_unknown_listing, "agence-immo-fr.yaml", ["demo_data", "NOPE-1"]),
    ],
    ids=[
        "unknown-field",
        "wrong-type",
        "tool-without-data",
        "bad-id",
        "unknown-tool",
        "no-end-call",
        "dangling-slot",
    ],
)
def test_a_broken_persona_is_refused_naming_file_and_field(
    tmp_path: Path, mutate: Any, filename: str, expected: list[str]
) -> None:
    data = copy.deepcopy(shipped("agence-immo-fr"))
    mutate(data)
    path = write(tmp_path, filename, data)
    with pytest.raises(CatalogError) as caught:
        load_persona(path)
    message = str(caught.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message


def test_id_must_match_the_file_name(tmp_path: Path) -> None:
    path = write(tmp_path, "agence-immo.yaml", shipped("agence-immo-fr"))
    with pytest.raises(CatalogError, match=r"agence-immo\.yaml: id: 'agence-immo-fr' must match"):
        load_persona(path)


def test_one_bad_file_stops_the_whole_catalogue(tmp_path: Path) -> None:
    for persona_id in SHIPPED:
        write(tmp_path, f"{persona_id}.yaml", shipped(persona_id))
    broken = shipped("after-hours-en")
    broken["language"] = "de"
    write(tmp_path, "after-hours-en.yaml", broken)
    with pytest.raises(CatalogError, match=r"after-hours-en\.yaml(.|\n)*language"):
        load_catalog(tmp_path)


def test_not_yaml_or_not_a_mapping_or_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "x-one.yaml").write_text("id: [unclosed\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"x-one\.yaml: not valid YAML"):
        load_persona(tmp_path / "x-one.yaml")
    (tmp_path / "x-two.yaml").write_text("- a list\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"x-two\.yaml: a persona file must hold a mapping"):
        load_persona(tmp_path / "x-two.yaml")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CatalogError, match="no persona files"):
        load_catalog(empty)
