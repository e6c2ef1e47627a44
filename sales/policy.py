"""The sales-request rules (policies/requests.yaml), typed and checked."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from policies.model import validate_file

SHIPPED = Path(__file__).resolve().parents[1] / "policies" / "requests.yaml"

Positive = Annotated[int, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RequestLimits(_Strict):
    per_visitor_per_day: Annotated[int, Field(ge=1, le=100)]
    global_per_day: Annotated[int, Field(ge=1, le=100_000)]
    max_body_bytes: Annotated[int, Field(ge=1024, le=65_536)]

    @model_validator(mode="after")
    def _visitor_within_global(self) -> RequestLimits:
        if self.per_visitor_per_day > self.global_per_day:
            raise ValueError("limits.per_visitor_per_day exceeds limits.global_per_day")
        return self


class Length(_Strict):
    min: Annotated[int, Field(ge=1)]
    max: Annotated[int, Field(ge=1, le=5000)]

    @model_validator(mode="after")
    def _ordered(self) -> Length:
        if self.min > self.max:
            raise ValueError("min exceeds max")
        return self


class FieldLengths(_Strict):
    name: Length
    email: Length
    phone: Length
    company: Length
    message: Length


class NotifyRules(_Strict):
    first_retry_s: Annotated[float, Field(gt=0, le=86_400)]
    max_retry_s: Annotated[float, Field(gt=0, le=86_400)]
    timeout_s: Annotated[float, Field(gt=0, le=300)]
    lease_s: Annotated[float, Field(gt=0, le=86_400)]
    poll_s: Annotated[float, Field(gt=0, le=3600)]

    @model_validator(mode="after")
    def _coherent(self) -> NotifyRules:
        if self.first_retry_s > self.max_retry_s:
            raise ValueError("notify.first_retry_s exceeds notify.max_retry_s")
        # A send is a connection and a handful of commands, each bounded by timeout_s:
        # the hold must outlast them, or a slow send would be started again elsewhere.
        if self.lease_s < 8 * self.timeout_s:
            raise ValueError("notify.lease_s must be at least 8 x notify.timeout_s")
        return self

    def retry_delay_s(self, attempts: int) -> float:
        """The wait after the `attempts`-th failed try."""
        return float(min(self.first_retry_s * 2 ** max(0, min(attempts, 40) - 1), self.max_retry_s))


class RequestRules(_Strict):
    limits: RequestLimits
    fields: FieldLengths
    languages: Annotated[list[Annotated[str, Field(pattern=r"^[a-z]{2}$")]], Field(min_length=1)]
    notify: NotifyRules


def load_request_rules(directory: Path | None = None) -> RequestRules:
    """POLICIES_DIR's requests.yaml when it has one, else the shipped file."""
    path = SHIPPED
    if directory is not None and (directory / "requests.yaml").exists():
        path = directory / "requests.yaml"
    return validate_file(RequestRules, path)
