"""Retention audit: every key in Redis has a TTL, none above its kind's policy maximum.

Usable from cron: `python -m ops audit` exits non-zero on any breach. Keys that are not ours
(no `{ocf}:` prefix) are held to the privacy policy's outer bound for demo data (90 days)
and must expire too: nothing in this Redis may live forever. Sales requests have their own
bound (retention.yaml `sales_requests_days`, at most 12 months).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ops.context import OpsContext
from policies.model import PRIVACY_MAX_DAYS
from policies.replies import text
from redisdb import keys

DAY_S = 86_400
BATCH = 500


def policy_maxima(ctx: OpsContext) -> dict[str, int]:
    """The longest TTL each kind of key may have, from the policies that set it."""
    r = ctx.policies.retention
    # admission.lua and claim.lua: a lease key outlives its latest lease by a second.
    lease = ctx.policies.lease_ceiling_s + 1
    unjoined = ctx.policies.admission_lease_s() + 1
    counters = DAY_S + 60  # admission.lua: day buckets outlive their day by a minute
    return {
        keys.SALT: r.salt_ttl_s,
        keys.SESSION: r.session_ttl_s,
        keys.STATS: r.session_ttl_s,
        keys.VISITOR_SESSIONS: r.pseudonym_ttl_s,
        keys.VISITOR_ACTIVE: lease,
        keys.GLOBAL_ACTIVE: lease,
        keys.NETWORK_ACTIVE: lease,
        keys.VISITOR_UNJOINED: unjoined,
        keys.NETWORK_UNJOINED: unjoined,
        # The never-joined sweeper's index outlives the tokens in it (admission.py).
        keys.GLOBAL_UNJOINED: lease,
        keys.NETWORK_HOUR: 3600 + 60,
        keys.NETWORK_DAY: counters,
        keys.VISITOR_HOUR: 3600 + 60,
        keys.VISITOR_DAY: counters,
        keys.VISITOR_SECONDS: counters,
        keys.VISITOR_REFUSALS: counters,
        keys.GLOBAL_SECONDS: counters,
        keys.BLOCK: ctx.rules.block_max_s,
        keys.SHOWCASE: ctx.rules.showcase_ttl_s,
        keys.PEPPER: max(r.session_ttl_s, r.pseudonym_ttl_s),
        keys.OPS_LOG: ctx.rules.audit_log_ttl_s,
        keys.SIGNIN: ctx.rules.signin_ttl_s,
        keys.REQUEST: r.sales_requests_ttl_s,
        keys.REQUESTS_BY_EMAIL: r.sales_requests_ttl_s,
        keys.REQUESTS_PENDING: r.sales_requests_ttl_s,
        keys.REQUESTS_VISITOR_DAY: counters,
        keys.REQUESTS_GLOBAL_DAY: counters,
        "foreign": PRIVACY_MAX_DAYS * DAY_S,
    }


@dataclass
class KindCount:
    keys: int = 0
    max_ttl_s: int = 0

    def as_dict(self, limit: int | None) -> dict[str, object]:
        return {"keys": self.keys, "max_ttl_s": self.max_ttl_s, "policy_max_s": limit}


@dataclass
class AuditReport:
    maxima: dict[str, int]
    kinds: dict[str, KindCount] = field(default_factory=dict)
    breaches: list[dict[str, object]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaches

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "total_keys": sum(k.keys for k in self.kinds.values()),
            "kinds": {
                name: count.as_dict(self.maxima.get(name))
                for name, count in sorted(self.kinds.items())
            },
            "breaches": self.breaches,
        }


async def audit(ctx: OpsContext) -> AuditReport:
    report = AuditReport(policy_maxima(ctx))
    batch: list[str] = []

    async def check() -> None:
        async with ctx.redis.pipeline(transaction=False) as pipe:
            for name in batch:
                pipe.ttl(name)
            ttls = await pipe.execute()
        for name, ttl in zip(batch, (int(t) for t in ttls), strict=True):
            if ttl == -2:
                continue  # expired since the scan
            kind = keys.kind_of(name)
            count = report.kinds.setdefault(kind, KindCount())
            count.keys += 1
            count.max_ttl_s = max(count.max_ttl_s, ttl)
            limit = report.maxima.get(kind)
            if ttl == -1:
                report.breaches.append({"key": name, "kind": kind, "problem": "no_ttl"})
            elif limit is None:
                report.breaches.append(
                    {"key": name, "kind": kind, "problem": "unknown_kind", "ttl_s": ttl}
                )
            elif ttl > limit:
                report.breaches.append(
                    {
                        "key": name,
                        "kind": kind,
                        "problem": "ttl_above_policy",
                        "ttl_s": ttl,
                        "policy_max_s": limit,
                    }
                )
        batch.clear()

    async for key in ctx.redis.scan_iter(count=BATCH):
        batch.append(text(key))
        if len(batch) >= BATCH:
            await check()
    if batch:
        await check()
    return report
