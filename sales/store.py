"""Sales-request records in Redis, and every change made to them.

- `{ocf}:req:<reference>`: one hash per request (the form, its context, status, contact
  and rights marks, the mail's delivery metadata), TTL `sales_requests_days` from its
  creation, moved to that much from now each time a contact is recorded.
- `{ocf}:reqe:<email hash>`: the references of one email (its keyed hash, never the email),
  living as long as the longest-lived of them.
- `{ocf}:reqp`: the mails to sales still to send (reference -> when due), when SMTP is on.
- `{ocf}:rqv:<visitor>:<day>`, `{ocf}:rqg:<day>`: requests accepted today, per visitor
  pseudonym and from everyone (the limits), a day and a minute.

Every change is one script that never recreates a record that expired or was erased (a
late write would bring it back without its TTL) and keeps the index and the queue in step.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from policies.model import DAY_S, Retention
from policies.replies import text
from redisdb import keys
from redisdb.scripts import lua_file
from sales.form import SalesForm
from sales.identity import email_hash, new_reference, normalise_email
from sales.policy import RequestRules

_HERE = Path(__file__).resolve().parent
BATCH = 200

# Delivery metadata: the only things kept about the mail to sales.
NOTIFY_FIELDS = (
    "notify_status", "notify_attempts", "notify_last_attempt_at", "notify_next_at",
    "notify_sent_at", "notify_error", "notify_message_id",
)  # fmt: skip
# Every field a record may hold (tests/sales/test_*.py hold the store to it).
RECORD_FIELDS = frozenset(
    {
        "reference", "created_at", "updated_at", "status", "email_hash",
        "name", "email", "phone", "company", "message", "language",
        "persona", "session_id", "page_language",
        "contacted_at", "contacts", "rectified_at", "rectified_fields",
        "restricted", "restricted_at", "restriction_lifted_at",
        *NOTIFY_FIELDS,
    }
)  # fmt: skip

_NOW = "local t = redis.call('TIME'); local now = tonumber(t[1]) + tonumber(t[2]) / 1000000\n"
_STAMP = "local stamp = string.format('%.3f', now)\n"

# KEYS[1] record; ARGV prefix, reference, TTL. 0 unknown, 2 restricted, 1 done.
_CONTACTED = (
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[1], 'restricted') == 1 then return 2 end
"""
    + _NOW
    + _STAMP
    + """
redis.call('HSET', KEYS[1], 'status', 'contacted', 'contacted_at', stamp, 'updated_at', stamp)
redis.call('HINCRBY', KEYS[1], 'contacts', 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
local hash = redis.call('HGET', KEYS[1], 'email_hash')
if hash then
  local index = ARGV[1] .. 'reqe:' .. hash
  redis.call('SADD', index, ARGV[2])
  if redis.call('TTL', index) < tonumber(ARGV[3]) then redis.call('EXPIRE', index, ARGV[3]) end
end
return 1
"""
)

# KEYS[1] record; ARGV prefix, reference, new email hash or '', the fields changed (names,
# comma-separated), the number N of field/value pairs to set, the N pairs, then the fields
# to delete. 0 unknown, 1 done.
_RECTIFY = (
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
"""
    + _NOW
    + _STAMP
    + """
local n = tonumber(ARGV[5])
local pairs_ = {}
for i = 6, 5 + 2 * n do pairs_[#pairs_ + 1] = ARGV[i] end
if #pairs_ > 0 then redis.call('HSET', KEYS[1], unpack(pairs_)) end
for i = 6 + 2 * n, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
redis.call('HSET', KEYS[1], 'rectified_at', stamp, 'updated_at', stamp,
  'rectified_fields', ARGV[4])
if ARGV[3] ~= '' then
  local old = redis.call('HGET', KEYS[1], 'email_hash')
  if old and old ~= ARGV[3] then redis.call('SREM', ARGV[1] .. 'reqe:' .. old, ARGV[2]) end
  redis.call('HSET', KEYS[1], 'email_hash', ARGV[3])
  local index = ARGV[1] .. 'reqe:' .. ARGV[3]
  redis.call('SADD', index, ARGV[2])
  local ttl = redis.call('TTL', KEYS[1])
  if redis.call('TTL', index) < ttl then redis.call('EXPIRE', index, ttl) end
end
return 1
"""
)

# KEYS[1] record, KEYS[2] queue; ARGV reference, '1' to lift. 0 unknown, 1 done.
_RESTRICT = (
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
"""
    + _NOW
    + _STAMP
    + """
if ARGV[2] == '1' then
  redis.call('HDEL', KEYS[1], 'restricted', 'restricted_at')
  redis.call('HSET', KEYS[1], 'restriction_lifted_at', stamp, 'updated_at', stamp)
  return 1
end
redis.call('HSET', KEYS[1], 'restricted', '1', 'restricted_at', stamp, 'updated_at', stamp)
if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'notify_status', 'withheld')
  redis.call('HDEL', KEYS[1], 'notify_next_at')
end
return 1
"""
)

# KEYS[1] record, KEYS[2] queue; ARGV prefix, reference. 1 if there was a record.
_ERASE = """
local hash = redis.call('HGET', KEYS[1], 'email_hash')
local existed = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
if hash then redis.call('SREM', ARGV[1] .. 'reqe:' .. hash, ARGV[2]) end
return existed
"""

# KEYS[1] queue; ARGV prefix, lease (s), how many. Takes the mails due: each is held for
# the lease (its due time moved), its attempt counted; a record gone or restricted leaves
# the queue. Returns reference, attempts, reference, attempts...
_CLAIM = (
    _NOW
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, ref in ipairs(due) do
  local record = ARGV[1] .. 'req:' .. ref
  if redis.call('EXISTS', record) == 0 or redis.call('HEXISTS', record, 'restricted') == 1 then
    redis.call('ZREM', KEYS[1], ref)
  else
    redis.call('ZADD', KEYS[1], 'XX', string.format('%.3f', now + tonumber(ARGV[2])), ref)
    local attempts = redis.call('HINCRBY', record, 'notify_attempts', 1)
    redis.call('HSET', record, 'notify_last_attempt_at', string.format('%.3f', now))
    redis.call('HDEL', record, 'notify_next_at')
    out[#out + 1] = ref
    out[#out + 1] = attempts
  end
end
return out
"""
)

# KEYS[1] queue, KEYS[2] record; ARGV reference, message id, a partial failure or ''.
_SENT = (
    """
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
"""
    + _NOW
    + _STAMP
    + """
redis.call('HSET', KEYS[2], 'notify_status', 'sent', 'notify_sent_at', stamp,
  'notify_message_id', ARGV[2])
redis.call('HDEL', KEYS[2], 'notify_next_at')
if ARGV[3] ~= '' then redis.call('HSET', KEYS[2], 'notify_error', ARGV[3])
else redis.call('HDEL', KEYS[2], 'notify_error') end
return 1
"""
)

# KEYS[1] queue, KEYS[2] record; ARGV reference, error, delay (s), message id, queue TTL.
# Only while still queued: a request restricted or erased meanwhile stays out.
_FAILED = (
    """
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('ZREM', KEYS[1], ARGV[1]); return 0 end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
"""
    + _NOW
    + """
local due = string.format('%.3f', now + tonumber(ARGV[3]))
redis.call('ZADD', KEYS[1], 'XX', due, ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('HSET', KEYS[2], 'notify_status', 'failed', 'notify_error', ARGV[2],
  'notify_next_at', due, 'notify_message_id', ARGV[4])
return 1
"""
)


@dataclass(frozen=True)
class Accepted:
    reference: str
    created_at: float


@dataclass(frozen=True)
class Limited:
    reason: str  # visitor_daily | global_daily
    retry_after_s: int
    limit: int


@dataclass(frozen=True)
class StoredRequest:
    fields: dict[str, str]
    ttl_s: int

    @property
    def reference(self) -> str:
        return self.fields.get("reference", "")

    @property
    def created_at(self) -> float:
        try:
            return float(self.fields.get("created_at", "0"))
        except ValueError:
            return 0.0

    @property
    def restricted(self) -> bool:
        return self.fields.get("restricted") == "1"


class RequestStore:
    def __init__(
        self, redis: Redis, retention: Retention, rules: RequestRules, pepper: str
    ) -> None:
        self._redis = redis
        self._rules = rules
        self._pepper = pepper
        self.ttl_s = retention.sales_requests_ttl_s
        self._submit = lua_file(redis, _HERE / "submit.lua")
        self._contacted = redis.register_script(_CONTACTED)
        self._rectify = redis.register_script(_RECTIFY)
        self._restrict = redis.register_script(_RESTRICT)
        self._erase = redis.register_script(_ERASE)
        self._claim = redis.register_script(_CLAIM)
        self._sent = redis.register_script(_SENT)
        self._failed = redis.register_script(_FAILED)

    @property
    def redis(self) -> Redis:
        return self._redis

    def email_hash(self, email: str) -> str:
        return email_hash(self._pepper, email)

    # --- the form ------------------------------------------------------------------------

    async def submit(self, form: SalesForm, visitor: str, *, notify: bool) -> Accepted | Limited:
        """Count, store and (when `notify`) queue the request, or refuse it over a limit."""
        limits = self._rules.limits
        hashed = self.email_hash(form.email)
        fields = {**form.stored_fields(), "email_hash": hashed, "status": "new"}
        while True:  # 60 random bits: a reference already taken is drawn again
            reference = new_reference()
            flat = [p for item in {**fields, "reference": reference}.items() for p in item]
            result = await self._submit(
                keys=[keys.request(reference), keys.requests_by_email(hashed),
                      keys.requests_pending()],
                args=[keys.PREFIX, str(visitor), limits.per_visitor_per_day,
                      limits.global_per_day, self.ttl_s, DAY_S + 60, "1" if notify else "0",
                      *flat],
            )  # fmt: skip
            code = int(result[0])
            if code == 1:
                return Accepted(reference, float(text(result[1])))
            if code == 0:
                reason = text(result[1])
                limit = (
                    limits.per_visitor_per_day
                    if reason == "visitor_daily"
                    else limits.global_per_day
                )
                return Limited(reason, int(text(result[2])), limit)

    # --- reading -------------------------------------------------------------------------

    async def get_many(self, references: list[str]) -> list[StoredRequest]:
        """The records that exist, in the order asked."""
        if not references:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for reference in references:
                pipe.hgetall(keys.request(reference))
                pipe.ttl(keys.request(reference))
            replies = await pipe.execute()
        found = []
        for raw, ttl in zip(replies[::2], replies[1::2], strict=True):
            if raw:
                fields = {text(k): text(v) for k, v in raw.items()}
                found.append(StoredRequest(fields, int(ttl)))
        return found

    async def get(self, reference: str) -> StoredRequest | None:
        found = await self.get_many([reference])
        return found[0] if found else None

    async def scan(self) -> AsyncIterator[StoredRequest]:
        """Every request record, in no particular order."""
        batch: list[str] = []
        async for key in self._redis.scan_iter(match=keys.pattern(keys.REQUEST), count=500):
            batch.append(text(key).rsplit(":", 1)[1])
            if len(batch) >= BATCH:
                for stored in await self.get_many(batch):
                    yield stored
                batch.clear()
        for stored in await self.get_many(batch):
            yield stored

    async def find(self, email: str) -> list[StoredRequest]:
        """Every request of one email, oldest first: through its keyed hash, and a scan of
        the records as the net under it (a request indexed under another secret's hash,
        after VISITOR_HASH_SECRET changed, is still found)."""
        target = normalise_email(email)
        members = await self._redis.smembers(keys.requests_by_email(self.email_hash(email)))
        found = {s.reference: s for s in await self.get_many(sorted(text(m) for m in members))}
        async for stored in self.scan():
            if normalise_email(stored.fields.get("email", "")) == target:
                found[stored.reference] = stored
        return sorted(found.values(), key=lambda s: s.created_at)

    async def pending_count(self) -> int:
        return int(await self._redis.zcard(keys.requests_pending()))

    # --- changes -------------------------------------------------------------------------

    async def contacted(self, reference: str) -> int:
        """1 recorded (TTL moved), 2 restricted (nothing changed), 0 unknown."""
        return int(
            await self._contacted(
                keys=[keys.request(reference)], args=[keys.PREFIX, reference, self.ttl_s]
            )
        )

    async def rectify(self, reference: str, changes: dict[str, str | None]) -> bool:
        """Set (or, for None, remove) form fields; the email's index follows its change."""
        sets = {k: v for k, v in changes.items() if v is not None}
        removed = [k for k, v in changes.items() if v is None]
        new_hash = self.email_hash(sets["email"]) if "email" in sets else ""
        flat = [p for item in sets.items() for p in item]
        done = await self._rectify(
            keys=[keys.request(reference)],
            args=[keys.PREFIX, reference, new_hash, ",".join(sorted(changes)), len(sets),
                  *flat, *removed],
        )  # fmt: skip
        return int(done) == 1

    async def restrict(self, reference: str, *, lift: bool = False) -> bool:
        done = await self._restrict(
            keys=[keys.request(reference), keys.requests_pending()],
            args=[reference, "1" if lift else "0"],
        )
        return int(done) == 1

    async def erase(self, references: list[str]) -> int:
        """Delete the records, their queue entries and their index entries, including any
        left under another secret's hash; returns how many records there were."""
        erased = 0
        for reference in references:
            erased += int(
                await self._erase(
                    keys=[keys.request(reference), keys.requests_pending()],
                    args=[keys.PREFIX, reference],
                )
            )
        indexes = [
            text(k)
            async for k in self._redis.scan_iter(
                match=keys.pattern(keys.REQUESTS_BY_EMAIL), count=500
            )
        ]
        if indexes and references:
            async with self._redis.pipeline(transaction=False) as pipe:
                for index in indexes:
                    pipe.srem(index, *references)
                await pipe.execute()
        return erased

    # --- the mail to sales -----------------------------------------------------------------

    async def claim_due(self, lease_s: float, limit: int) -> list[tuple[str, int]]:
        """The mails due now, each held for `lease_s`, with its attempt number."""
        reply = await self._claim(
            keys=[keys.requests_pending()], args=[keys.PREFIX, lease_s, limit]
        )
        return [(text(reply[i]), int(reply[i + 1])) for i in range(0, len(reply), 2)]

    async def mark_sent(self, reference: str, message_id: str, partial: str = "") -> None:
        await self._sent(
            keys=[keys.requests_pending(), keys.request(reference)],
            args=[reference, message_id, partial],
        )

    async def mark_failed(
        self, reference: str, error: str, delay_s: float, message_id: str
    ) -> None:
        await self._failed(
            keys=[keys.requests_pending(), keys.request(reference)],
            args=[reference, error, delay_s, message_id, self.ttl_s],
        )
