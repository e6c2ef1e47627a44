"""Every Redis key name, in one place.

All keys share the `{ocf}` hash tag: admission reads and writes per-visitor and global keys
in one script, and Redis Cluster only runs a script whose keys live in one slot. The demo's
footprint is small (a few keys per session), so one slot is not a capacity problem.
"""

from __future__ import annotations

TAG = "{ocf}"
PREFIX = f"{TAG}:"

# Key kinds, as the audit and ops tools count them (the part after the prefix).
SALT = "salt"
SESSION = "sess"
VISITOR_SESSIONS = "vsess"  # set of session ids per visitor pseudonym (access / erasure)
VISITOR_ACTIVE = "vact"  # zset: session id -> lease expiry (per-visitor concurrency)
VISITOR_HOUR = "vh"
VISITOR_DAY = "vd"
VISITOR_SECONDS = "vm"  # seconds of call time reserved today
VISITOR_REFUSALS = "vr"  # refusals today (automatic defence)
VISITOR_UNJOINED = "vun"  # zset: session id -> join deadline, tokens not yet claimed
GLOBAL_ACTIVE = "gact"
GLOBAL_SECONDS = "gm"
GLOBAL_UNJOINED = "gun"  # zset like vun for everyone: also the never-joined sweeper's index
# Prefix aggregates (limits.yaml `networks`), keyed by a network pseudonym (policies/
# pseudonyms.py: a keyed hash of the network, like a visitor's of its address).
NETWORK_ACTIVE = "nact"
NETWORK_UNJOINED = "nun"
NETWORK_HOUR = "nh"
NETWORK_DAY = "nd"
BLOCK = "block"
STATS = "stats"  # hash per hour bucket: issued, refusals by reason, per persona
SHOWCASE = "showcase"  # sales' run-time override of the catalogue (ops)
PEPPER = "pepper"  # a fingerprint of VISITOR_HASH_SECRET (ops checks its own against it)
OPS_LOG = "opslog"  # one ops action (what, when, which credential): accountability
SIGNIN = "signin"  # failed ops sign-ins in a window, per client pseudonym and for everyone
# Sales requests (sales/): the form's records, found by a keyed hash of the email.
REQUEST = "req"  # one request record (hash): the form, its context, delivery metadata
REQUESTS_BY_EMAIL = "reqe"  # set of references per keyed email hash (never the email)
REQUESTS_PENDING = "reqp"  # zset: reference -> when its mail to sales is next due
REQUESTS_VISITOR_DAY = "rqv"  # requests accepted today per visitor pseudonym
REQUESTS_GLOBAL_DAY = "rqg"  # requests accepted today from everyone


def salt(period: int) -> str:
    return f"{PREFIX}{SALT}:{period}"


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


def block(visitor: str) -> str:
    return f"{PREFIX}{BLOCK}:{visitor}"


def stats(hour: int) -> str:
    return f"{PREFIX}{STATS}:{hour}"


def showcase() -> str:
    return f"{PREFIX}{SHOWCASE}"


def pepper(fingerprint: str) -> str:
    return f"{PREFIX}{PEPPER}:{fingerprint}"


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


def kind_of(key: str) -> str:
    """The kind of a key (`sess`, `vh`...), or `foreign` for keys that are not ours."""
    if not key.startswith(PREFIX):
        return "foreign"
    return key[len(PREFIX) :].split(":", 1)[0]


def visitor_bucket(kind: str, visitor: str, bucket: int) -> str:
    """A per-visitor counter (`vh`, `vd`, `vm`, `vr`) for one hour or day bucket."""
    return f"{PREFIX}{kind}:{visitor}:{bucket}"


def global_seconds(day: int) -> str:
    return f"{PREFIX}{GLOBAL_SECONDS}:{day}"


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
