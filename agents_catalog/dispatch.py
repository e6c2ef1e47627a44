"""The dispatch metadata: which call a LiveKit job is, as the token server writes it into the
room token's agent dispatch and the worker reads it back before accepting the job.

The worker trusts nothing in it beyond this shape: the persona is looked up again in the
catalogue and the duration capped again by today's policy (agent/dispatch.py).
"""

# Here, not in agent/ or beside the token server: both sides import agents_catalog already,
# and it imports neither of them (agent/ pulls livekit.agents into the token server).

from __future__ import annotations

import json
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_METADATA_BYTES = 4096

# Why each field was refused, as the worker logs it (never shown to a visitor).
_REASONS = {
    "persona": "persona is missing",
    "session_id": "session_id is missing or malformed",
    "language": "language is missing or not a string",
    "max_duration_s": "max_duration_s must be a positive integer",
    "issued_at": "issued_at must be a Unix time",
}


class InvalidDispatch(ValueError):
    """The metadata is not one the token server writes; the message says why."""


class DispatchMetadata(BaseModel):
    # Strict: a bool is no duration, "300" is no integer, and a field we do not know is
    # refused rather than ignored.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    persona: Annotated[str, Field(min_length=1)]
    session_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
    language: str
    max_duration_s: Annotated[int, Field(gt=0)]
    # When admission issued the token (Redis' clock); optional for dispatches made by hand.
    issued_at: Annotated[float, Field(gt=0)] | None = None

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | None) -> DispatchMetadata:
        if not raw:
            raise InvalidDispatch("job metadata is missing")
        if len(raw.encode()) > MAX_METADATA_BYTES:
            raise InvalidDispatch("job metadata is too large")
        try:
            fields = json.loads(raw)
        except ValueError as exc:
            raise InvalidDispatch("job metadata is not JSON") from exc
        if not isinstance(fields, dict):
            raise InvalidDispatch("job metadata must be a JSON object")
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            raise InvalidDispatch(_reason(exc)) from exc


def _reason(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error["loc"] else ""
    if error["type"] == "extra_forbidden":
        return f"job metadata: unexpected field {field!r}"
    return f"job metadata: {_REASONS.get(field, 'invalid')}"
