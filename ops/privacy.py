"""Rights of access and erasure for an IP address we never stored.

The address is hashed again under every salt still in Redis: those pseudonyms are the only
way anything of ours can be tied to it (when a salt expires, what it hashed can no longer
be linked to anyone). Everything keyed by or holding one of those pseudonyms is shown
(`lookup`) or deleted (`erase`): session records, the visitor's session index, leases,
counters, refusals, blocks. Hourly stats are counts with no pseudonym and stay.

Both first check that this process hashes with the VISITOR_HASH_SECRET the data was made
with (its fingerprint in Redis, written by the token server): with another secret an
address matches nothing, and "0 deleted" would be a false answer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ops.context import OpsContext
from ops.records import scan_sessions, text
from policies import keys
from policies.client_address import parse_ip
from policies.pseudonyms import normalise_ip


class PrivacyError(ValueError):
    """Bad input (not an IP address); nothing was read or changed."""


class SecretMismatch(PrivacyError):
    """This process's VISITOR_HASH_SECRET cannot be the one the data was made with."""


@dataclass
class Found:
    address: str
    pseudonyms: list[dict[str, object]]
    sessions: dict[str, dict[str, str]] = field(default_factory=dict)
    keys: dict[str, int] = field(default_factory=dict)  # key -> TTL seconds

    def summary(self) -> dict[str, object]:
        kinds = Counter(keys.kind_of(k) for k in self.keys)
        if self.sessions:
            kinds[keys.SESSION] += len(self.sessions)
        return {"sessions": len(self.sessions), "keys_by_kind": dict(sorted(kinds.items()))}


async def check_secret(ctx: OpsContext) -> int:
    """Raise SecretMismatch unless data made with our secret may be in Redis (its
    fingerprint key lives) or nothing can be found at all (no salt); else return how many
    other secrets made data still in Redis (a rotation, or servers configured apart)."""
    mine = keys.pepper(ctx.hasher.fingerprint)
    live = {text(k) async for k in ctx.redis.scan_iter(match=keys.pattern(keys.PEPPER))}
    others = len(live - {mine})
    if mine in live:
        return others
    if others:
        raise SecretMismatch(
            "VISITOR_HASH_SECRET is not the secret the token server hashes with (its "
            "fingerprint in Redis differs), so an address hashed with this one matches "
            "nothing. Run again with the token server's VISITOR_HASH_SECRET. Nothing was "
            "read or changed."
        )
    if await ctx.hasher.live_salts():
        raise SecretMismatch(
            "Redis holds no fingerprint of the VISITOR_HASH_SECRET its data was made with "
            "(the token server writes it at start and every minute), so this secret cannot "
            "be checked. Start the token server, then run again. Nothing was read or changed."
        )
    return 0


def _warning(others: int) -> dict[str, object]:
    if not others:
        return {}
    return {
        "warning": f"{others} other VISITOR_HASH_SECRET(s) made data still in Redis; "
        "what they made cannot be found with this one"
    }


async def _discover(ctx: OpsContext, ip: str) -> Found:
    address = parse_ip(ip)
    if address is None:
        raise PrivacyError("that is not an IPv4 or IPv6 address")
    salts = await ctx.hasher.live_salts()
    visitors = {ctx.hasher.visitor(salt, address): salt.period for salt in salts}
    found = Found(
        address=normalise_ip(address),
        pseudonyms=[{"salt_period": p, "visitor": v} for v, p in visitors.items()],
    )
    if not visitors:
        return found

    session_ids: set[str] = set()
    for visitor in visitors:
        names = [keys.visitor_sessions(visitor), keys.visitor_active(visitor), keys.block(visitor)]
        for kind in keys.VISITOR_BUCKET_KINDS:
            names += [
                text(k)
                async for k in ctx.redis.scan_iter(match=keys.pattern(kind, visitor), count=500)
            ]
        async with ctx.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.ttl(name)
            ttls = await pipe.execute()
        found.keys.update({n: int(t) for n, t in zip(names, ttls, strict=True) if int(t) != -2})
        session_ids |= {text(m) for m in await ctx.redis.smembers(keys.visitor_sessions(visitor))}
    # The index can lose a member (different TTLs, an index written by an older version):
    # a scan of the records by their visitor field makes sure nothing is missed.
    async for view in scan_sessions(ctx.redis):
        if view.visitor in visitors:
            found.sessions[view.id] = view.fields
    missing = session_ids - set(found.sessions)
    for session_id in sorted(missing):
        raw = await ctx.redis.hgetall(keys.session(session_id))
        if raw:
            found.sessions[session_id] = {text(k): text(v) for k, v in raw.items()}
    return found


async def lookup(ctx: OpsContext, ip: str) -> dict[str, object]:
    others = await check_secret(ctx)
    found = await _discover(ctx, ip)
    return {
        "address": found.address,
        "pseudonyms": found.pseudonyms,
        "found": found.summary(),
        "sessions": sorted(found.sessions.values(), key=lambda r: r.get("issued_at", "")),
        "keys": [
            {"key": k, "kind": keys.kind_of(k), "ttl_s": t} for k, t in sorted(found.keys.items())
        ],
        **_warning(others),
    }


async def erase(ctx: OpsContext, ip: str) -> dict[str, object]:
    others = await check_secret(ctx)
    found = await _discover(ctx, ip)
    names = list(found.keys) + [keys.session(s) for s in found.sessions]
    if names:
        async with ctx.redis.pipeline(transaction=True) as pipe:
            pipe.delete(*names)
            if found.sessions:
                # Their slots in the global concurrency set name the sessions: free them too.
                pipe.zrem(keys.global_active(), *found.sessions)
            await pipe.execute()
    after = await _discover(ctx, ip)
    return {
        "address": found.address,
        "pseudonyms": found.pseudonyms,
        "deleted": found.summary(),
        "remaining": after.summary(),
        **_warning(others),
    }
