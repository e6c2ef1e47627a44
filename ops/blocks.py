"""Blocks: a visitor pseudonym refused by admission (admission.lua) while the key lives.

`{ocf}:block:<visitor>` holds JSON {"reason", "by", "created_at"} and always a TTL: a block
ends on its own (at most policies/ops.yaml `blocks.max_days`, itself within the pseudonym
retention). The automatic defence writes the same key with `by: "auto"`.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time

from ops.context import OpsContext
from policies.admission import Refusal, Refused
from policies.pseudonyms import PSEUDONYM_HEX
from policies.replies import text
from redisdb import keys

VISITOR = re.compile(rf"^[0-9a-f]{{{PSEUDONYM_HEX}}}$")
DURATION = re.compile(r"^(\d{1,6})([smhd])$")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
REASON_MAX = 200


class BlockError(ValueError):
    """Bad input for a block; nothing was changed."""


def check_visitor(visitor: str) -> str:
    if not VISITOR.match(visitor):
        raise BlockError(
            f"{visitor!r} is not a visitor pseudonym ({PSEUDONYM_HEX} lowercase hex characters)"
        )
    return visitor


def parse_duration(value: str) -> int:
    """'7d', '12h', '30m', '90s' -> seconds."""
    match = DURATION.match(value.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise BlockError(f"{value!r} is not a duration like 7d, 12h, 30m or 90s")
    return int(match.group(1)) * UNIT_S[match.group(2)]


# Runs of characters an address is written with ("203.0.113.7", "2001:db8::1", "[::1]:80").
ADDRESS_LIKE = re.compile(r"[0-9A-Fa-f.:]*[0-9][0-9A-Fa-f.:]*")


def _is_address(token: str) -> bool:
    try:
        ipaddress.ip_address(token)
    except ValueError:
        return False
    return True


def _holds_address(text: str) -> bool:
    for match in ADDRESS_LIKE.finditer(text):
        token = match.group(0).strip(".").rstrip(":")
        # "1.2.3.4:80": the address before the port.
        if _is_address(token) or (token.count(":") == 1 and _is_address(token.split(":")[0])):
            return True
    return False


def _check_reason(reason: str) -> str:
    reason = reason.strip()
    if not reason or len(reason) > REASON_MAX or not reason.isprintable():
        raise BlockError(f"give a reason of 1 to {REASON_MAX} printable characters")
    # The reason is stored with the block and in the audit log: never an address.
    if _holds_address(reason):
        raise BlockError("the reason may not contain an IP address (only its pseudonym)")
    return reason


async def block(
    ctx: OpsContext, visitor: str, seconds: int, reason: str, by: str = "ops"
) -> dict[str, object]:
    check_visitor(visitor)
    reason = _check_reason(reason)
    limit = ctx.rules.block_max_s
    if not 0 < seconds <= limit:
        raise BlockError(f"a block lasts at most {limit // 86_400} days (policies/ops.yaml)")
    now = time.time()
    value = json.dumps({"reason": reason, "by": by, "created_at": round(now, 3)})
    await ctx.redis.set(keys.block(visitor), value, ex=seconds)
    return {"visitor": visitor, "reason": reason, "by": by, "expires_at": round(now + seconds)}


async def unblock(ctx: OpsContext, visitor: str) -> bool:
    check_visitor(visitor)
    return int(await ctx.redis.delete(keys.block(visitor))) == 1


def _describe(raw: str | None) -> dict[str, object]:
    try:
        data = json.loads(raw or "")
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        return {"reason": "(unreadable)", "by": "unknown", "created_at": None}
    return {k: data.get(k) for k in ("reason", "by", "created_at")}


async def list_blocks(ctx: OpsContext) -> list[dict[str, object]]:
    names = [text(k) async for k in ctx.redis.scan_iter(match=keys.pattern(keys.BLOCK), count=500)]
    if not names:
        return []
    async with ctx.redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.get(name)
            pipe.ttl(name)
        results = await pipe.execute()
    now = time.time()
    rows = []
    for i, name in enumerate(names):
        raw, ttl = results[2 * i], int(results[2 * i + 1])
        if raw is None or ttl == -2:
            continue  # expired between SCAN and GET
        rows.append(
            {
                "visitor": name.rsplit(":", 1)[1],
                **_describe(text(raw)),
                "expires_at": round(now + ttl) if ttl > 0 else None,
                "ttl_s": ttl,
            }
        )
    return sorted(rows, key=lambda r: float(r["created_at"] or 0), reverse=True)  # type: ignore[arg-type]


class AutoDefence:
    """Blocks a visitor who keeps tripping their limits (policies/ops.yaml `auto_block`).

    Fed every refusal admission returns; admission counts the visitor's refusals of the
    day atomically, so the threshold holds however many token-server processes run.
    """

    def __init__(self, ctx: OpsContext) -> None:
        self._ctx = ctx
        rules = ctx.rules.auto_block
        self._reasons = set(rules.reasons)
        self._threshold = rules.refusals_per_day
        self._ttl_s = rules.block_hours * 3600

    async def on_refusal(self, visitor: str, refused: Refused) -> bool:
        """True if this refusal got the visitor blocked."""
        if refused.reason == Refusal.BLOCKED or refused.reason not in self._reasons:
            return False
        if refused.refusals_today < self._threshold:
            return False
        value = json.dumps(
            {
                "reason": f"auto: {refused.refusals_today} refusals today "
                f"(last: {refused.reason.value})",
                "by": "auto",
                "created_at": round(time.time(), 3),
            }
        )
        # NX: never shorten or overwrite a block ops set by hand.
        return bool(await self._ctx.redis.set(keys.block(visitor), value, ex=self._ttl_s, nx=True))
