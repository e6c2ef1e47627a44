"""Every Redis key name, in one place.

All keys share the `{ocf}` hash tag: admission reads and writes per-visitor and global keys
in one script, and Redis Cluster only runs a script whose keys live in one slot. The demo's
footprint is small (a few keys per session), so one slot is not a capacity problem.

The strings are the stored data's names: a rename strands every record already in Redis
(tests/redisdb/test_keys.py pins them). Each kind below says what its keys hold and which
setting governs their TTL (ops/audit.py holds every kind to that maximum). Some keys are
built inside Lua scripts from PREFIX (passed as ARGV[1]) because their time bucket comes
from Redis' clock or their name from a field of the record: those say so, and the script
must be changed with the name.
"""

from __future__ import annotations

TAG = "{ocf}"
PREFIX = f"{TAG}:"

# --- Key kinds: the part after the prefix (ops' lookup, erasure, audit and stats count by it)

# Pseudonyms (policies/pseudonyms.py).
SALT = "salt"  # the salt period's random salt; TTL period end + longest retention (salt_ttl_s)
PEPPER = "pepper"  # a fingerprint of VISITOR_HASH_SECRET (ops checks its own against it);
# TTL the longest of session_ttl_s and pseudonym_ttl_s, renewed by every sweep

# Sessions and their index (admission.lua writes both).
SESSION = "sess"  # the session record (hash, sessions/store.py); TTL session_ttl_s
VISITOR_SESSIONS = "vsess"  # set of session ids per visitor pseudonym (access / erasure);
# TTL pseudonym_ttl_s

# Concurrency leases: zsets of session id -> lease end. Admission takes them until the join
# deadline, claim.lua raises them to cover the call, release.lua gives them back. TTL: their
# longest lease + 1 s (at most lease_ceiling_s + 1). claim.lua and release.lua build the
# visitor's and the networks' names themselves (prefix .. 'vact:' .. the record's visitor,
# prefix .. 'nact:' .. each of its `nets`).
VISITOR_ACTIVE = "vact"
NETWORK_ACTIVE = "nact"
GLOBAL_ACTIVE = "gact"

# Tokens not yet claimed by a worker: zsets of session id -> join deadline; TTL the join
# window + margin + 1 s (admission_lease_s + 1). claim.lua and release.lua build the
# visitor's and the networks' names as for the leases ('vun:', 'nun:').
VISITOR_UNJOINED = "vun"
NETWORK_UNJOINED = "nun"
# Everyone's, and the never-joined sweeper's index: it outlives the tokens in it (TTL
# lease_ceiling_s + 1, admission.py).
GLOBAL_UNJOINED = "gun"

# Counters per hour or day bucket, all built by admission.lua from Redis' clock (the
# bucket is the hour or day number since the epoch); TTL their hour + 60 s or day + 60 s.
VISITOR_HOUR = "vh"  # sessions admitted this hour, per visitor pseudonym
VISITOR_DAY = "vd"  # sessions admitted today, per visitor pseudonym
VISITOR_SECONDS = "vm"  # seconds of call time reserved today (release.lua refunds: 'vm:')
VISITOR_REFUSALS = "vr"  # refusals today (automatic defence); admission.lua also reads the
# previous salt period's, naming it from the tail of KEYS' previous block key ('block:')
GLOBAL_SECONDS = "gm"  # seconds reserved today by everyone (release.lua refunds: 'gm:')
# Prefix aggregates (limits.yaml `networks`), keyed by a network pseudonym (policies/
# pseudonyms.py: a keyed hash of the network, like a visitor's of its address).
NETWORK_HOUR = "nh"
NETWORK_DAY = "nd"
STATS = "stats"  # hash per hour bucket: issued, refusals by reason, per persona; built by
# admission.lua, TTL session_ttl_s from the bucket's first write

# Ops (ops/, policies/ops.yaml).
BLOCK = "block"  # a blocked visitor pseudonym (JSON: reason, by, when); TTL the block's
# length, at most blocks.max_days (block_max_s); admission.lua reads its tail back as the
# pseudonym (string.sub past 'block:')
SHOWCASE = "showcase"  # sales' run-time override of the catalogue (hash: persona -> JSON);
# TTL showcase.ttl_days, renewed by every change
OPS_LOG = "opslog"  # one ops action (what, when, which credential): accountability;
# TTL audit_log.days
SIGNIN = "signin"  # failed ops sign-ins in a window, per client pseudonym and for everyone;
# TTL the window + 60 s (signin_ttl_s)

# Sales requests (sales/): the form's records, found by a keyed hash of the email. TTL
# sales_requests_ttl_s for the first three (moved on each recorded contact).
REQUEST = "req"  # one request record (hash): the form, its context, delivery metadata;
# sales/store.py's queue script (_CLAIM) builds it from a queued reference ('req:')
REQUESTS_BY_EMAIL = "reqe"  # set of references per keyed email hash (never the email);
# sales/store.py's contact, rectify and erase scripts build it from the record's hash ('reqe:')
REQUESTS_PENDING = "reqp"  # zset: reference -> when its mail to sales is next due
REQUESTS_VISITOR_DAY = "rqv"  # requests accepted today per visitor pseudonym; built by
# sales/submit.lua from Redis' clock, TTL the day + 60 s
REQUESTS_GLOBAL_DAY = "rqg"  # requests accepted today from everyone; as rqv


# --- Names: one function per key the Python code reads or writes ----------------------


def salt(period: int) -> str:
    return f"{PREFIX}{SALT}:{period}"


def pepper(fingerprint: str) -> str:
    return f"{PREFIX}{PEPPER}:{fingerprint}"


def session(session_id: str) -> str:
    return f"{PREFIX}{SESSION}:{session_id}"


def visitor_sessions(visitor: str) -> str:
    return f"{PREFIX}{VISITOR_SESSIONS}:{visitor}"


def visitor_active(visitor: str) -> str:
    return f"{PREFIX}{VISITOR_ACTIVE}:{visitor}"


def global_active() -> str:
    return f"{PREFIX}{GLOBAL_ACTIVE}"


def visitor_unjoined(visitor: str) -> str:
    return f"{PREFIX}{VISITOR_UNJOINED}:{visitor}"


def global_unjoined() -> str:
    return f"{PREFIX}{GLOBAL_UNJOINED}"


def network_active(network: str) -> str:
    return f"{PREFIX}{NETWORK_ACTIVE}:{network}"


def network_unjoined(network: str) -> str:
    return f"{PREFIX}{NETWORK_UNJOINED}:{network}"


def visitor_bucket(kind: str, visitor: str, bucket: int) -> str:
    """A per-visitor or per-network counter (`vh`, `vd`, `vm`, `vr`, `rqv`; `nh`, `nd`) for
    one hour or day bucket, as the Lua scripts name it."""
    return f"{PREFIX}{kind}:{visitor}:{bucket}"


def global_seconds(day: int) -> str:
    return f"{PREFIX}{GLOBAL_SECONDS}:{day}"


def requests_global_day(day: int) -> str:
    return f"{PREFIX}{REQUESTS_GLOBAL_DAY}:{day}"


def stats(hour: int) -> str:
    return f"{PREFIX}{STATS}:{hour}"


def block(visitor: str) -> str:
    return f"{PREFIX}{BLOCK}:{visitor}"


def showcase() -> str:
    return f"{PREFIX}{SHOWCASE}"


def ops_log(entry_id: str) -> str:
    return f"{PREFIX}{OPS_LOG}:{entry_id}"


def signin_failures(client: str, window: int) -> str:
    """`client` is a visitor pseudonym, or `all` for the global count."""
    return f"{PREFIX}{SIGNIN}:{client}:{window}"


def request(reference: str) -> str:
    return f"{PREFIX}{REQUEST}:{reference}"


def requests_by_email(email_hash: str) -> str:
    return f"{PREFIX}{REQUESTS_BY_EMAIL}:{email_hash}"


def requests_pending() -> str:
    return f"{PREFIX}{REQUESTS_PENDING}"


# --- Reading names back --------------------------------------------------------------------


def kind_of(key: str) -> str:
    """The kind of a key (`sess`, `vh`...), or `foreign` for keys that are not ours."""
    if not key.startswith(PREFIX):
        return "foreign"
    return key[len(PREFIX) :].split(":", 1)[0]


def pattern(kind: str, *parts: str) -> str:
    """A SCAN pattern for keys of one kind (ops: lookup, erasure, audit, stats).
    `pattern(SESSION)` -> every session record; `pattern(VISITOR_HOUR, v)` -> v's hours."""
    return ":".join((f"{PREFIX}{kind}", *parts, "*"))


# Per-visitor counters, one key per hour or day bucket (erasure deletes all of them).
VISITOR_BUCKET_KINDS = (
    VISITOR_HOUR, VISITOR_DAY, VISITOR_SECONDS, VISITOR_REFUSALS, REQUESTS_VISITOR_DAY,
)  # fmt: skip
# Per-network counters, one key per hour or day bucket (shared by everyone in the network).
NETWORK_BUCKET_KINDS = (NETWORK_HOUR, NETWORK_DAY)
