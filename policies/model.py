"""Load and validate the privacy and abuse policies (retention.yaml, limits.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_DIR = Path(__file__).resolve().parent

# The privacy policy's promise: demo sessions and IP/UA hashes are kept 30 to 90 days.
# These bounds are not configuration: changing them means changing the published policy.
PRIVACY_MIN_DAYS = 30
PRIVACY_MAX_DAYS = 90
# "Sales requests: up to 12 months after last contact".
SALES_REQUESTS_MAX_DAYS = 365
DAY_S = 86_400


class PolicyError(ValueError):
    """A policy file is wrong or breaks the privacy policy; start-up must stop."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Positive = Annotated[int, Field(gt=0)]


class Retention(_Strict):
    demo_sessions_days: Annotated[int, Field(ge=PRIVACY_MIN_DAYS, le=PRIVACY_MAX_DAYS)]
    ip_ua_hashes_days: Annotated[int, Field(ge=PRIVACY_MIN_DAYS, le=PRIVACY_MAX_DAYS)]
    salt_period_days: Annotated[int, Field(ge=1, le=PRIVACY_MAX_DAYS)]
    sales_requests_days: Annotated[int, Field(ge=1, le=SALES_REQUESTS_MAX_DAYS)]

    @model_validator(mode="after")
    def _salt_within_policy(self) -> Retention:
        if self.salt_ttl_s > PRIVACY_MAX_DAYS * DAY_S:
            raise ValueError(
                "salt_period_days + the longest retention must stay within "
                f"{PRIVACY_MAX_DAYS} days (salts link pseudonyms to addresses)"
            )
        return self

    @property
    def session_ttl_s(self) -> int:
        return self.demo_sessions_days * DAY_S

    @property
    def pseudonym_ttl_s(self) -> int:
        return self.ip_ua_hashes_days * DAY_S

    @property
    def salt_period_s(self) -> int:
        return self.salt_period_days * DAY_S

    @property
    def salt_ttl_s(self) -> int:
        longest = max(self.demo_sessions_days, self.ip_ua_hashes_days)
        return (self.salt_period_days + longest) * DAY_S

    @property
    def sales_requests_ttl_s(self) -> int:
        return self.sales_requests_days * DAY_S

    @property
    def max_ttl_s(self) -> int:
        """No key of the demo (sessions, pseudonyms, salts, counters) may live longer than
        this; sales requests have their own bound (sales_requests_ttl_s)."""
        return PRIVACY_MAX_DAYS * DAY_S


class VisitorLimits(_Strict):
    concurrent_sessions: Positive
    sessions_per_hour: Positive
    sessions_per_day: Positive
    minutes_per_day: Positive
    # Tokens issued and not yet claimed by the worker (nobody joined with them yet).
    unjoined_tokens: Positive


class NetworkLimits(_Strict):
    """One prefix aggregate: every visitor whose address falls in the same network of
    this prefix length counts here too (limits.yaml `networks`)."""

    concurrent_sessions: Positive
    sessions_per_hour: Positive
    sessions_per_day: Positive
    unjoined_tokens: Positive


# A visitor is one IPv4 address or one IPv6 /64: an aggregate is a wider network.
_IPV4_PREFIXES = range(8, 32)
_IPV6_PREFIXES = range(16, 64)


class NetworkAggregates(_Strict):
    ipv4: dict[int, NetworkLimits] = Field(default_factory=dict)
    ipv6: dict[int, NetworkLimits] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _wider_than_a_visitor(self) -> NetworkAggregates:
        for family, prefixes, allowed in (
            ("ipv4", self.ipv4, _IPV4_PREFIXES),
            ("ipv6", self.ipv6, _IPV6_PREFIXES),
        ):
            for prefix in prefixes:
                if prefix not in allowed:
                    raise ValueError(
                        f"{family} prefix /{prefix}: an aggregate must be wider than one "
                        f"visitor (/{allowed.start} to /{allowed.stop - 1})"
                    )
        return self

    def levels(self, version: int) -> list[tuple[int, NetworkLimits]]:
        """The aggregates for an address of this IP version, narrowest first."""
        table = self.ipv4 if version == 4 else self.ipv6
        return sorted(table.items(), reverse=True)


class GlobalLimits(_Strict):
    concurrent_sessions: Positive
    minutes_per_day: Positive
    unjoined_tokens: Positive


class SessionLimits(_Strict):
    max_duration_s: Annotated[int, Field(ge=30, le=3600)]
    join_window_s: Annotated[int, Field(ge=10, le=900)]
    lease_margin_s: Annotated[int, Field(ge=0, le=900)]


class RoomLimits(_Strict):
    # Non-agent participants (LiveKit does not count agents): the visitor.
    max_participants: Annotated[int, Field(ge=1, le=10)]
    empty_timeout_s: Positive
    departure_timeout_s: Positive


class HttpLimits(_Strict):
    max_body_bytes: Annotated[int, Field(ge=256, le=1_048_576)]
    max_header_bytes: Annotated[int, Field(ge=1024, le=65_536)]
    request_read_timeout_s: Annotated[float, Field(ge=0.5, le=120)]
    keep_alive_timeout_s: Annotated[int, Field(ge=1, le=300)]
    max_connections: Annotated[int, Field(ge=16, le=100_000)]


class Limits(_Strict):
    visitor: VisitorLimits
    global_: GlobalLimits = Field(alias="global")
    session: SessionLimits
    room: RoomLimits
    http: HttpLimits
    networks: NetworkAggregates

    @model_validator(mode="after")
    def _coherent(self) -> Limits:
        if self.visitor.sessions_per_hour > self.visitor.sessions_per_day:
            raise ValueError("visitor.sessions_per_hour cannot exceed sessions_per_day")
        if self.session.max_duration_s > self.visitor.minutes_per_day * 60:
            raise ValueError("session.max_duration_s exceeds visitor.minutes_per_day")
        return self


class Policies(_Strict):
    retention: Retention
    limits: Limits

    def session_duration_s(self, persona_max_s: int | None) -> int:
        """A persona may shorten the call, never lengthen it past the policy."""
        cap = self.limits.session.max_duration_s
        return min(cap, persona_max_s) if persona_max_s else cap

    def admission_lease_s(self) -> int:
        """What admission holds a slot for: the join window (+ margin). The worker's claim
        (policies/claim.lua) raises the lease to cover the call; a token nobody uses gives
        its slot back when the window is over, not after a whole call's length."""
        s = self.limits.session
        return s.join_window_s + s.lease_margin_s

    def call_lease_s(self, duration_s: int) -> int:
        """The lease from the claim on: the call's reserved duration (+ margin)."""
        return duration_s + self.limits.session.lease_margin_s

    @property
    def lease_ceiling_s(self) -> int:
        """No lease key is ever set to live longer than this (the audit's bound): admission
        holds the join window + margin, a claim the call + margin, each from its moment."""
        s = self.limits.session
        return s.join_window_s + s.max_duration_s + s.lease_margin_s


def _load_yaml(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PolicyError(f"{path}: policy file missing") from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from exc


M = TypeVar("M", bound=BaseModel)


def validate_file(model: type[M], path: Path) -> M:
    """Load a policy YAML file into `model`; PolicyError names the file and each field."""
    try:
        return model.model_validate(_load_yaml(path))
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}" for e in exc.errors()
        )
        raise PolicyError(f"{path}: {details}") from exc


def load_policies(directory: Path | None = None) -> Policies:
    directory = directory or DEFAULT_DIR
    return Policies(
        retention=validate_file(Retention, directory / "retention.yaml"),
        limits=validate_file(Limits, directory / "limits.yaml"),
    )
