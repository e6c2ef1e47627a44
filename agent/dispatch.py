"""Which call a dispatched job is: its metadata, checked before the job is accepted.

The token server puts a JSON object in the agent dispatch (livekit_token.DispatchInfo).
A job whose metadata is missing or malformed, or names a persona that is unknown or
disabled, is declined at request time: it is never run with a default persona.
Showcase overrides (ops can disable a persona at run time) are applied here too, by
whoever passes an `enabled` lookup.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from agents_catalog import Catalog, Persona
from policies.model import Policies

SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_METADATA_BYTES = 4096


class JobRejected(ValueError):
    """The job must be declined; the message says why (logged, never shown to a visitor)."""


@dataclass(frozen=True)
class JobSpec:
    persona: Persona
    session_id: str
    max_duration_s: int
    issued_at: float | None


def parse_job_metadata(
    raw: str | None,
    catalog: Catalog,
    policies: Policies,
    enabled: Callable[[Persona], bool] | None = None,
) -> JobSpec:
    if not raw:
        raise JobRejected("job metadata is missing")
    if len(raw.encode()) > MAX_METADATA_BYTES:
        raise JobRejected("job metadata is too large")
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise JobRejected("job metadata is not JSON") from exc
    if not isinstance(meta, dict):
        raise JobRejected("job metadata must be a JSON object")

    persona_id = meta.get("persona")
    if not isinstance(persona_id, str) or not persona_id:
        raise JobRejected("job metadata: persona is missing")
    persona = catalog.get(persona_id)
    if persona is None:
        raise JobRejected(f"job metadata: unknown persona {persona_id!r}")
    if not (enabled(persona) if enabled else persona.enabled):
        raise JobRejected(f"job metadata: persona {persona_id!r} is disabled")

    session_id = meta.get("session_id")
    if not isinstance(session_id, str) or not SESSION_ID.match(session_id):
        raise JobRejected("job metadata: session_id is missing or malformed")

    language = meta.get("language")
    if language != persona.language:
        raise JobRejected(
            f"job metadata: language {language!r} does not match persona {persona_id!r}"
        )

    max_s = meta.get("max_duration_s")
    if isinstance(max_s, bool) or not isinstance(max_s, int) or max_s <= 0:
        raise JobRejected("job metadata: max_duration_s must be a positive integer")
    # The token server already capped it; the worker caps it again so a forged or stale
    # dispatch can never buy a longer call than the policy allows today.
    max_s = min(max_s, policies.session_duration_s(persona.max_duration_s))

    issued_at = meta.get("issued_at")
    if issued_at is not None and (
        isinstance(issued_at, bool) or not isinstance(issued_at, int | float) or issued_at <= 0
    ):
        raise JobRejected("job metadata: issued_at must be a Unix time")

    return JobSpec(
        persona=persona,
        session_id=session_id,
        max_duration_s=max_s,
        issued_at=float(issued_at) if issued_at is not None else None,
    )
