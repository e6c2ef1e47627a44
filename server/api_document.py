"""`GET /openapi.json`: the public HTTP surface as an OpenAPI document (server/openapi.yaml).

Written by hand rather than generated: `/api/token` is a plain ASGI app the framework never
sees, and the other routes answer raw responses whose shapes the framework cannot infer.
tests/server/test_openapi_document.py and the fuzzer (tests/server/test_fuzz.py) hold it to what the
server answers. JSON only: no Swagger UI (the page's CSP allows no third-party script).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter
from fastapi.responses import Response

from server.settings import ConfigError

DOCUMENT_PATH = Path(__file__).resolve().parent / "openapi.yaml"
URL = "/openapi.json"


def load_document(persona_ids: Sequence[str], path: Path = DOCUMENT_PATH) -> dict[str, Any]:
    """The document with the catalogue's persona ids filled in (data lives in one place:
    the catalogue)."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if not isinstance(document, dict) or "paths" not in document:
        raise ConfigError(f"{path}: not an OpenAPI document")
    try:
        document["components"]["schemas"]["CataloguePersonaId"]["enum"] = list(persona_ids)
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: no components.schemas.CataloguePersonaId") from exc
    return document


def document_router(persona_ids: Sequence[str], path: Path = DOCUMENT_PATH) -> APIRouter:
    body = json.dumps(load_document(persona_ids, path), separators=(",", ":")).encode()
    router = APIRouter()

    @router.get(URL, include_in_schema=False)
    async def api_document() -> Response:
        return Response(
            body, media_type="application/json", headers={"Cache-Control": "public, max-age=300"}
        )

    return router
