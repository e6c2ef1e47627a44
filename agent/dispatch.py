"""Which call a dispatched job is: its metadata, checked before the job is accepted.

The token server writes the metadata (agents_catalog.dispatch.DispatchMetadata), whose
shape is checked there. A job whose metadata is missing or malformed, or names a persona
that is unknown or disabled, is declined at request time: it is never run with a default
persona. Showcase overrides (ops can disable a persona at run time) are applied here too,
by whoever passes an `enabled` lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agents_catalog import Catalog, Persona
from agents_catalog.dispatch import DispatchMetadata, InvalidDispatch
from policies.model import Policies


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
    try:
        meta = DispatchMetadata.from_json(raw)
    except InvalidDispatch as exc:
        raise JobRejected(str(exc)) from exc

    persona = catalog.get(meta.persona)
    if persona is None:
        raise JobRejected(f"job metadata: unknown persona {meta.persona!r}")
    if not (enabled(persona) if enabled else persona.enabled):
        raise JobRejected(f"job metadata: persona {meta.persona!r} is disabled")
    if meta.language != persona.language:
        raise JobRejected(
            f"job metadata: language {meta.language!r} does not match persona {meta.persona!r}"
        )
    return JobSpec(
        persona=persona,
        session_id=meta.session_id,
        # The token server already capped it; the worker caps it again so a forged or stale
        # dispatch can never buy a longer call than the policy allows today.
        max_duration_s=min(
            meta.max_duration_s, policies.session_duration_s(persona.max_duration_s)
        ),
        issued_at=meta.issued_at,
    )
