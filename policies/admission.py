"""Admission: who may start a demo call now, decided and recorded in one Redis script.

The script (admission.lua) checks the block list (under the visitor's pseudonym and, while
its salt lives, the previous period's: see policies/pseudonyms.py), the visitor's
concurrency, unjoined tokens, hourly, daily and minute limits, then each prefix aggregate
the address belongs to (concurrency, unjoined tokens, hourly, daily: limits.yaml
`networks`), then the global concurrency, unjoined tokens and daily minutes (the bill's
ceiling); if admitted it takes the slots until the join deadline, counts the token as
unjoined, reserves the minutes and writes the session record, all in one atomic round
trip. The worker's claim (claim.lua) then holds the slots for the call. `release`
(release.lua) gives every slot back and refunds unused minutes, exactly once per session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from policies.model import Policies
from policies.pseudonyms import NetworkId, VisitorId
from policies.replies import text
from redisdb import keys
from redisdb.pipelined import PipelinedRedis
from redisdb.scripts import lua_file

_HERE = Path(__file__).resolve().parent


class Refusal(StrEnum):
    BLOCKED = "blocked"
    VISITOR_CONCURRENT = "visitor_concurrent"
    VISITOR_UNJOINED = "visitor_unjoined"
    VISITOR_HOURLY = "visitor_hourly"
    VISITOR_DAILY = "visitor_daily"
    VISITOR_MINUTES = "visitor_minutes"
    NETWORK_CONCURRENT = "network_concurrent"
    NETWORK_UNJOINED = "network_unjoined"
    NETWORK_HOURLY = "network_hourly"
    NETWORK_DAILY = "network_daily"
    GLOBAL_CONCURRENT = "global_concurrent"
    GLOBAL_UNJOINED = "global_unjoined"
    GLOBAL_MINUTES = "global_minutes"

    @property
    def is_capacity(self) -> bool:
        """The whole demo is full (not this visitor's fault)."""
        return self in (Refusal.GLOBAL_CONCURRENT, Refusal.GLOBAL_UNJOINED, Refusal.GLOBAL_MINUTES)

    @property
    def is_network(self) -> bool:
        """The visitor's wider network reached its share: others in it may be the cause."""
        return self.value.startswith("network_")


@dataclass(frozen=True)
class Admitted:
    issued_at: float
    lease_expires_at: float


@dataclass(frozen=True)
class Refused:
    reason: Refusal
    retry_after_s: int
    refusals_today: int


@dataclass(frozen=True)
class Released:
    released: bool
    refunded_s: int
    # "released", "already_released", "unknown", or "status_changed" (only_if_status
    # was given and the record has another status: e.g. a worker claimed it)
    detail: str
    # When already released: the reason given by whoever released it first.
    previous_reason: str | None = None


class Admission:
    def __init__(
        self, redis: Redis, policies: Policies, pipelined: PipelinedRedis | None = None
    ) -> None:
        self._redis = redis
        self._policies = policies
        self._admit = lua_file(redis, _HERE / "admission.lua")
        self._admit_source = cast(str, self._admit.script)  # lua_file registers text
        self._release = lua_file(redis, _HERE / "release.lua")
        # The token endpoint's hot path goes through the pipelined client when given one.
        self._pipelined = pipelined

    async def admit(
        self,
        *,
        visitor: str,
        session_id: str,
        persona: str,
        duration_s: int,
        record: dict[str, str],
        networks: Sequence[NetworkId] = (),
    ) -> Admitted | Refused:
        """`networks`: the prefix aggregates the visitor's address belongs to, narrowest
        first (VisitorHasher.networks); none for callers that have no address."""
        policies = self._policies
        limits = policies.limits
        retention = policies.retention
        script_keys = [
            keys.session(session_id),
            keys.visitor_active(visitor),
            keys.global_active(),
            keys.block(visitor),
            keys.visitor_sessions(visitor),
            keys.visitor_unjoined(visitor),
            keys.global_unjoined(),
        ]
        network_args: list[str | int] = []
        for network in networks:
            script_keys += [
                keys.network_active(network.pseudonym),
                keys.network_unjoined(network.pseudonym),
            ]
            caps = network.limits
            network_args += [
                network.pseudonym,
                caps.concurrent_sessions,
                caps.sessions_per_hour,
                caps.sessions_per_day,
                caps.unjoined_tokens,
            ]
        previous = visitor.previous if isinstance(visitor, VisitorId) else None
        if previous:
            script_keys.append(keys.block(previous))
        script_args: list[str | int] = [
            keys.PREFIX,
            visitor,
            session_id,
            persona,
            duration_s,
            policies.admission_lease_s(),
            limits.visitor.concurrent_sessions,
            limits.visitor.sessions_per_hour,
            limits.visitor.sessions_per_day,
            limits.visitor.minutes_per_day * 60,
            limits.visitor.unjoined_tokens,
            limits.global_.concurrent_sessions,
            limits.global_.minutes_per_day * 60,
            limits.global_.unjoined_tokens,
            retention.session_ttl_s,
            retention.pseudonym_ttl_s,
            retention.session_ttl_s,
            # The sweeper reads expired tokens from the global index: it outlives them.
            policies.lease_ceiling_s + 1,
            len(networks),
            *network_args,
            *(part for item in record.items() for part in item),
        ]
        if self._pipelined is not None:
            reply = await self._pipelined.evalsha(
                self._admit.sha, self._admit_source, script_keys, script_args
            )
            if not isinstance(reply, list):
                raise ResponseError(f"unexpected admission reply {reply!r}")
            result: list[Any] = reply
        else:
            result = await self._admit(keys=script_keys, args=script_args)
        if int(result[0]) == 1:
            return Admitted(float(text(result[1])), float(text(result[2])))
        return Refused(Refusal(text(result[1])), int(text(result[2])), int(text(result[3])))

    async def release(
        self,
        session_id: str,
        used_s: float,
        reason: str,
        extra: dict[str, str] | None = None,
        *,
        only_if_status: str | None = None,
    ) -> Released:
        """Give the slot back and refund unused minutes; safe to call any number of times.
        `only_if_status`: release only a record still in that status, decided in the same
        atomic step (the never-joined sweeper must not close a session claimed meanwhile)."""
        fields = [part for item in (extra or {}).items() for part in item]
        result = await self._release(
            keys=[keys.session(session_id), keys.global_active(), keys.global_unjoined()],
            args=[
                keys.PREFIX,
                session_id,
                max(0.0, used_s),
                reason,
                only_if_status or "",
                *fields,
            ],
        )
        if int(result[0]) == 1:
            return Released(True, int(text(result[1])), "released")
        detail = text(result[1])
        previous = text(result[2]) if detail == "already_released" else None
        return Released(False, 0, detail, previous_reason=previous)
