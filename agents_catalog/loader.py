"""Load and validate the persona files (one YAML file per persona)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from agents_catalog.models import Persona

DEFAULT_DIR = Path(__file__).resolve().parent / "personas"


class CatalogError(ValueError):
    """A persona file is wrong; the message names the file and the field."""


def _describe(error: ValidationError, path: Path) -> str:
    lines = [f"{path}: invalid persona"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(file)"
        lines.append(f"  - {where}: {item['msg']}")
    return "\n".join(lines)


def load_persona(path: Path) -> Persona:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise CatalogError(f"{path}: a persona file must hold a mapping")
    try:
        persona = Persona.model_validate(raw)
    except ValidationError as exc:
        raise CatalogError(_describe(exc, path)) from exc
    if persona.id != path.stem:
        raise CatalogError(f"{path}: id: {persona.id!r} must match the file name {path.stem!r}")
    return persona


@dataclass(frozen=True)
class Catalog:
    """All personas by id. Showcase overrides (ops) are applied by the caller."""

    personas: dict[str, Persona]

    def __iter__(self) -> Iterator[Persona]:
        return iter(self.personas.values())

    def get(self, persona_id: str) -> Persona | None:
        return self.personas.get(persona_id)

    def showcase(self) -> list[Persona]:
        """Enabled personas in showcase order (order, then id for a stable tie-break)."""
        return sorted((p for p in self if p.enabled), key=lambda p: (p.order, p.id))


def load_catalog(directory: Path | None = None) -> Catalog:
    directory = directory or DEFAULT_DIR
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise CatalogError(f"{directory}: no persona files (*.yaml)")
    personas = [load_persona(path) for path in files]
    return Catalog({p.id: p for p in personas})
