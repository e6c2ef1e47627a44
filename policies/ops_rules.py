"""Ops rules (policies/ops.yaml) and vendor prices (policies/costs.yaml), typed and checked.

Here beside the other policy files, not in ops/: the worker reads the showcase rules too,
and must not import the ops tooling to do so.

Both files are read from POLICIES_DIR when they are there, else the shipped ones: a
policies directory made for limits/retention alone keeps the shipped ops rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from policies.admission import Refusal
from policies.model import (
    DAY_S,
    DEFAULT_DIR,
    PRIVACY_MAX_DAYS,
    Policies,
    PolicyError,
    validate_file,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Positive = Annotated[int, Field(gt=0)]


class BlockRules(_Strict):
    default_days: Annotated[int, Field(ge=1, le=PRIVACY_MAX_DAYS)]
    max_days: Annotated[int, Field(ge=1, le=PRIVACY_MAX_DAYS)]

    @model_validator(mode="after")
    def _default_within_max(self) -> BlockRules:
        if self.default_days > self.max_days:
            raise ValueError("blocks.default_days exceeds blocks.max_days")
        return self


class AutoBlock(_Strict):
    refusals_per_day: Annotated[int, Field(ge=2)]
    block_hours: Annotated[int, Field(ge=1, le=24 * 30)]
    reasons: list[Refusal]

    @model_validator(mode="after")
    def _visitor_reasons_only(self) -> AutoBlock:
        for reason in self.reasons:
            # A network's share is used by everyone in it: a neighbour is not to blame.
            if reason.is_capacity or reason.is_network or reason == Refusal.BLOCKED:
                raise ValueError(f"auto_block.reasons: {reason.value} is not the visitor's doing")
        return self


class AutomatedSignals(_Strict):
    refusals: Positive
    never_joined: Positive
    user_agents: Annotated[int, Field(ge=2)]
    short_sessions: Positive
    short_session_s: Positive
    bot_user_agent: bool
    non_browser_user_agent: bool


class ShowcaseRules(_Strict):
    ttl_days: Annotated[int, Field(ge=1, le=PRIVACY_MAX_DAYS)]
    cache_s: Annotated[float, Field(ge=0, le=60)]


class SessionRules(_Strict):
    sweep_every_s: Annotated[int, Field(ge=5, le=3600)]


class SigninRules(_Strict):
    window_s: Annotated[int, Field(ge=60, le=DAY_S)]
    per_client: Annotated[int, Field(ge=1, le=1000)]
    global_: Annotated[int, Field(ge=1, le=100_000, alias="global")]

    @model_validator(mode="after")
    def _client_within_global(self) -> SigninRules:
        if self.per_client > self.global_:
            raise ValueError("signin.per_client exceeds signin.global")
        return self


class AuditLogRules(_Strict):
    days: Annotated[int, Field(ge=1, le=PRIVACY_MAX_DAYS)]


class OpsPolicy(_Strict):
    blocks: BlockRules
    auto_block: AutoBlock
    automated: AutomatedSignals
    showcase: ShowcaseRules
    sessions: SessionRules
    signin: SigninRules
    audit_log: AuditLogRules

    @property
    def block_max_s(self) -> int:
        return self.blocks.max_days * DAY_S

    @property
    def showcase_ttl_s(self) -> int:
        return self.showcase.ttl_days * DAY_S

    @property
    def audit_log_ttl_s(self) -> int:
        return self.audit_log.days * DAY_S

    @property
    def signin_ttl_s(self) -> int:
        return self.signin.window_s + 60


class PerMinute(_Strict):
    livekit_agent_session: Annotated[float, Field(ge=0)]
    livekit_participant: Annotated[float, Field(ge=0)]
    stt_audio: Annotated[float, Field(ge=0)]


class PerMillion(_Strict):
    llm_prompt_tokens: Annotated[float, Field(ge=0)]
    llm_completion_tokens: Annotated[float, Field(ge=0)]
    tts_chars: Annotated[float, Field(ge=0)]


class Costs(_Strict):
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    per_minute: PerMinute
    per_million: PerMillion


def _file(directory: Path | None, name: str) -> Path:
    if directory is not None and (directory / name).exists():
        return directory / name
    return DEFAULT_DIR / name


def load_ops_policy(policies: Policies, directory: Path | None = None) -> OpsPolicy:
    path = _file(directory, "ops.yaml")
    rules = validate_file(OpsPolicy, path)
    # A block is keyed by a pseudonym: it may not outlive what the privacy policy allows
    # for pseudonyms.
    retention = policies.retention
    if rules.block_max_s > retention.pseudonym_ttl_s:
        raise PolicyError(
            f"{path}: blocks.max_days exceeds retention ip_ua_hashes_days "
            f"({retention.ip_ua_hashes_days})"
        )
    # Admission holds a block across one salt rotation (it checks the previous period's
    # pseudonym too), so no block may span two.
    longest_block = max(rules.block_max_s, rules.auto_block.block_hours * 3600)
    if longest_block > retention.salt_period_s:
        raise PolicyError(
            f"{path}: blocks.max_days / auto_block.block_hours exceed retention "
            f"salt_period_days ({retention.salt_period_days}): a block would outlive the "
            "next salt rotation"
        )
    # Entries of blocks name a pseudonym: they may not outlive pseudonyms.
    if rules.audit_log_ttl_s > retention.pseudonym_ttl_s:
        raise PolicyError(
            f"{path}: audit_log.days exceeds retention ip_ua_hashes_days "
            f"({retention.ip_ua_hashes_days})"
        )
    return rules


def load_costs(directory: Path | None = None) -> Costs:
    return validate_file(Costs, _file(directory, "costs.yaml"))
