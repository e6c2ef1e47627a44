"""Rights of access and erasure for an IP address we never stored.

The address is hashed again under every salt still in Redis: those pseudonyms are the only
way anything of ours can be tied to it (when a salt expires, what it hashed can no longer
be linked to anyone). Everything keyed by or holding one of those pseudonyms is shown
(`lookup`) or deleted (`erase`): session records, the visitor's session index, leases,
counters, refusals. Hourly stats are counts with no pseudonym and stay.

Prefix aggregates (limits.yaml `networks`: the /56, /48 or /24 around the address) are
keyed by pseudonyms of those networks, made the same way. What they hold (sessions of the
network in progress or not yet joined, counts per hour and day) belongs to everyone in the
network, not to the person asking: `lookup` shows those keys apart, as shared; `erase`
takes this person's sessions out of them (releasing a session does) and keeps the counts,
which expire within a day. Deleting them would erase other people's counts too, and
hand whoever asks a reset of their whole network's limits.

Both first check that this process hashes with the VISITOR_HASH_SECRET the data was made
with (its fingerprint in Redis, written by the token server): with another secret an
address matches nothing, and "0 deleted" would be a false answer.

Erasure also undoes what the sessions still hold: an open session is released through
release.lua (its slot freed and its unused reserved minutes refunded to the visitor's and
the global daily count, exactly once whoever else releases it) and its call ended (the
LiveKit room deleted). Security data stays until it expires on its own: blocks and failed
ops sign-ins (the privacy policy allows keeping what abuse prevention needs).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from ops.calls import end_calls
from ops.context import OpsContext
from ops.records import scan_sessions
from policies.client_address import parse_ip
from policies.pseudonyms import normalise_ip
from policies.replies import text
from redisdb import keys
from server.livekit_token import room_name

# Kept by erasure: abuse prevention (each expires on its own within the policy).
SECURITY_KINDS = (keys.BLOCK, keys.SIGNIN)
KEPT_WHY = (
    "security blocks and failed ops sign-ins stay until they expire: the privacy policy "
    "allows keeping what abuse prevention needs"
)
SHARED_WHY = (
    "counters of the networks around the address (prefix aggregates) are shared by "
    "everyone in them: this address's sessions are taken out of them, the counts stay "
    "until they expire (within a day)"
)
ERASED = "erased"


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
    # The networks around the address (prefix aggregates) and their shared keys -> TTL.
    networks: list[dict[str, object]] = field(default_factory=list)
    network_keys: dict[str, int] = field(default_factory=dict)

    def summary(self, exclude: tuple[str, ...] = ()) -> dict[str, object]:
        kinds = Counter(keys.kind_of(k) for k in self.keys)
        if self.sessions:
            kinds[keys.SESSION] += len(self.sessions)
        for kind in exclude:
            kinds.pop(kind, None)
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
        names = [
            keys.visitor_sessions(visitor),
            keys.visitor_active(visitor),
            keys.visitor_unjoined(visitor),
            keys.block(visitor),
        ]
        names += await _scan(ctx, (*keys.VISITOR_BUCKET_KINDS, keys.SIGNIN), visitor)
        found.keys.update(await _ttls(ctx, names))
        session_ids |= {text(m) for m in await ctx.redis.smembers(keys.visitor_sessions(visitor))}
    for salt in salts:
        for network in ctx.hasher.networks(salt, address, ctx.policies.limits.networks):
            found.networks.append(
                {"salt_period": salt.period, "prefix": network.prefix,
                 "network": network.pseudonym}
            )  # fmt: skip
            net = network.pseudonym
            names = [keys.network_active(net), keys.network_unjoined(net)]
            names += await _scan(ctx, keys.NETWORK_BUCKET_KINDS, net)
            found.network_keys.update(await _ttls(ctx, names))
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


async def _scan(ctx: OpsContext, kinds: tuple[str, ...], owner: str) -> list[str]:
    """Every hour/day bucket key of these kinds under one pseudonym."""
    return [
        text(k)
        for kind in kinds
        async for k in ctx.redis.scan_iter(match=keys.pattern(kind, owner), count=500)
    ]


async def _ttls(ctx: OpsContext, names: list[str]) -> dict[str, int]:
    """The keys that exist among `names`, with their TTL."""
    async with ctx.redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.ttl(name)
        ttls = await pipe.execute()
    return {n: int(t) for n, t in zip(names, ttls, strict=True) if int(t) != -2}


def _shared(found: Found) -> dict[str, object]:
    kinds = Counter(keys.kind_of(k) for k in found.network_keys)
    return {"keys_by_kind": dict(sorted(kinds.items())), "why": SHARED_WHY}


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
        "networks": found.networks,
        "shared": {
            **_shared(found),
            "keys": [
                {"key": k, "kind": keys.kind_of(k), "ttl_s": t}
                for k, t in sorted(found.network_keys.items())
            ],
        },
        **_warning(others),
    }


def _used_s(record: dict[str, str], now: float) -> float:
    """Call time already spent (it stays counted); a session never started used none."""
    try:
        started = float(record["started_at"])
    except (KeyError, ValueError):
        return 0.0
    reserved = float(record.get("reserved_s") or record.get("max_duration_s") or 0)
    return min(max(0.0, now - started), reserved)


async def _close_open_sessions(ctx: OpsContext, found: Found) -> tuple[int, list[str]]:
    """Release every session not yet released; returns the seconds refunded and the rooms
    whose call may be running."""
    refunded, rooms = 0, []
    now = time.time()
    for session_id, record in sorted(found.sessions.items()):
        if "released_at" in record:
            continue
        released = await ctx.admission.release(
            session_id, _used_s(record, now), ERASED, {"status": ERASED}
        )
        refunded += released.refunded_s
        rooms.append(record.get("room") or room_name(session_id))
    return refunded, rooms


async def erase(ctx: OpsContext, ip: str) -> dict[str, object]:
    others = await check_secret(ctx)
    found = await _discover(ctx, ip)
    refunded, rooms = await _close_open_sessions(ctx, found)
    # Before the records go: a worker whose room disappears then finds its session
    # already released (and, once deleted, writes nothing back).
    calls = await end_calls(ctx.settings, rooms)
    kept = {k for k in found.keys if keys.kind_of(k) in SECURITY_KINDS}
    names = [k for k in found.keys if k not in kept] + [keys.session(s) for s in found.sessions]
    if names:
        async with ctx.redis.pipeline(transaction=True) as pipe:
            pipe.delete(*names)
            if found.sessions:
                # The global sets name the sessions: take them out too (release did for
                # open ones; this covers records it could not read).
                pipe.zrem(keys.global_active(), *found.sessions)
                pipe.zrem(keys.global_unjoined(), *found.sessions)
                for name in found.network_keys:
                    if keys.kind_of(name) in (keys.NETWORK_ACTIVE, keys.NETWORK_UNJOINED):
                        pipe.zrem(name, *found.sessions)
            await pipe.execute()
    after = await _discover(ctx, ip)
    return {
        "address": found.address,
        "pseudonyms": found.pseudonyms,
        "deleted": found.summary(exclude=SECURITY_KINDS),
        "refunded_s": refunded,
        "calls": calls.as_dict(),
        "kept": {
            "keys_by_kind": dict(sorted(Counter(keys.kind_of(k) for k in kept).items())),
            "why": KEPT_WHY,
        },
        "shared": _shared(after),
        "remaining": after.summary(exclude=SECURITY_KINDS),
        **_warning(others),
    }
