"""Key names are the stored data's names: every record already in Redis is found by them.

Pinned here as literal strings, so a rename fails loudly instead of stranding data; the
names the Lua scripts build themselves are checked against redisdb/keys.py twice, by reading
the scripts and by running them on a real Redis; and no production module outside redisdb/
spells a key by hand.
"""

from __future__ import annotations

import ast
import inspect
import re
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from redis.asyncio import Redis

from policies import load_policies
from policies.admission import Admission, Admitted, Refusal, Refused
from policies.claim import ClaimAnswer, Claims
from policies.model import NetworkLimits
from policies.pseudonyms import NetworkId, VisitorId
from redisdb import keys
from redisdb.connection import connect
from sales.form import SalesForm
from sales.policy import load_request_rules
from sales.store import Accepted, RequestStore
from tests.server.support import away_from_bucket_edge, redis_now
from tests.support import ROOT
from tests.test_import_cycles import our_modules

KINDS = {
    "SALT": "salt",
    "PEPPER": "pepper",
    "SESSION": "sess",
    "VISITOR_SESSIONS": "vsess",
    "VISITOR_ACTIVE": "vact",
    "NETWORK_ACTIVE": "nact",
    "GLOBAL_ACTIVE": "gact",
    "VISITOR_UNJOINED": "vun",
    "NETWORK_UNJOINED": "nun",
    "GLOBAL_UNJOINED": "gun",
    "VISITOR_HOUR": "vh",
    "VISITOR_DAY": "vd",
    "VISITOR_SECONDS": "vm",
    "VISITOR_REFUSALS": "vr",
    "GLOBAL_SECONDS": "gm",
    "NETWORK_HOUR": "nh",
    "NETWORK_DAY": "nd",
    "STATS": "stats",
    "BLOCK": "block",
    "SHOWCASE": "showcase",
    "OPS_LOG": "opslog",
    "SIGNIN": "signin",
    "REQUEST": "req",
    "REQUESTS_BY_EMAIL": "reqe",
    "REQUESTS_PENDING": "reqp",
    "REQUESTS_VISITOR_DAY": "rqv",
    "REQUESTS_GLOBAL_DAY": "rqg",
}

# Each naming function with one call and the exact name it must give.
NAMES = {
    "salt": (keys.salt(20_123), "{ocf}:salt:20123"),
    "pepper": (keys.pepper("f1f2"), "{ocf}:pepper:f1f2"),
    "session": (keys.session("s-1"), "{ocf}:sess:s-1"),
    "visitor_sessions": (keys.visitor_sessions("v1"), "{ocf}:vsess:v1"),
    "visitor_active": (keys.visitor_active("v1"), "{ocf}:vact:v1"),
    "global_active": (keys.global_active(), "{ocf}:gact"),
    "visitor_unjoined": (keys.visitor_unjoined("v1"), "{ocf}:vun:v1"),
    "global_unjoined": (keys.global_unjoined(), "{ocf}:gun"),
    "network_active": (keys.network_active("n1"), "{ocf}:nact:n1"),
    "network_unjoined": (keys.network_unjoined("n1"), "{ocf}:nun:n1"),
    "visitor_bucket": (keys.visitor_bucket(keys.VISITOR_HOUR, "v1", 489_000), "{ocf}:vh:v1:489000"),
    "global_seconds": (keys.global_seconds(20_123), "{ocf}:gm:20123"),
    "requests_global_day": (keys.requests_global_day(20_123), "{ocf}:rqg:20123"),
    "stats": (keys.stats(489_000), "{ocf}:stats:489000"),
    "block": (keys.block("v1"), "{ocf}:block:v1"),
    "showcase": (keys.showcase(), "{ocf}:showcase"),
    "ops_log": (keys.ops_log("1700000000000-ab"), "{ocf}:opslog:1700000000000-ab"),
    "signin_failures": (keys.signin_failures("all", 7), "{ocf}:signin:all:7"),
    "request": (keys.request("R-1"), "{ocf}:req:R-1"),
    "requests_by_email": (keys.requests_by_email("e1"), "{ocf}:reqe:e1"),
    "requests_pending": (keys.requests_pending(), "{ocf}:reqp"),
    "kind_of": (keys.kind_of("{ocf}:vh:v1:489000") + keys.kind_of("x:1"), "vhforeign"),
    "pattern": (keys.pattern(keys.VISITOR_HOUR, "v1"), "{ocf}:vh:v1:*"),
}

# The names each Lua script builds itself from the prefix (ARGV[1]), not given in KEYS.
LUA_BUILT = {
    "policies/admission.lua": {"nh", "nd", "vh", "vd", "vm", "vr", "gm", "stats"},
    "policies/claim.lua": {"vact", "vun", "nact", "nun"},
    "policies/release.lua": {"vact", "vun", "nact", "nun", "gm", "vm"},
    "sales/submit.lua": {"rqv", "rqg"},
    "sales/store.py": {"req", "reqe"},  # the scripts written inline there
}


def declared_kinds() -> dict[str, str]:
    return {
        name: value
        for name, value in vars(keys).items()
        if name.isupper() and isinstance(value, str) and name not in ("TAG", "PREFIX")
    }


def test_the_names_are_pinned():
    assert (keys.TAG, keys.PREFIX) == ("{ocf}", "{ocf}:")
    assert declared_kinds() == KINDS
    assert keys.VISITOR_BUCKET_KINDS == ("vh", "vd", "vm", "vr", "rqv")
    assert keys.NETWORK_BUCKET_KINDS == ("nh", "nd")
    functions = {
        name
        for name, value in vars(keys).items()
        if inspect.isfunction(value) and value.__module__ == keys.__name__
    }
    assert functions == set(NAMES), "pin every naming function here"
    for name, (made, pinned) in NAMES.items():
        assert made == pinned, name


def lua_sources() -> Iterator[tuple[str, str]]:
    """Every Lua script of the production code: the files, and the strings in Python
    modules that are Lua (they call redis.call), by file."""
    for name, path in sorted(our_modules().items()):
        if name.partition(".")[0] == "redisdb":
            continue
        inline = [
            node.value
            for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and "redis.call(" in node.value
        ]
        if inline:
            yield str(path.relative_to(ROOT)), "\n".join(inline)
    for path in sorted(ROOT.glob("*/*.lua")):
        yield str(path.relative_to(ROOT)), path.read_text()


def built_kinds(lua: str) -> set[str]:
    code = re.sub(r"--[^\n]*", "", lua)  # comments name keys too, as prose
    return set(re.findall(r"(?:prefix|ARGV\[1\])\s*\.\.\s*'([a-z]+):'", code))


def test_the_names_lua_builds_are_ours():
    found = {where: kinds for where, lua in lua_sources() if (kinds := built_kinds(lua))}
    assert found == LUA_BUILT
    assert set().union(*found.values()) <= set(declared_kinds().values())
    # admission.lua reads the previous pseudonym back from its block key: the tail starts
    # after the prefix and `block:` (Lua strings count from 1).
    admission = (ROOT / "policies/admission.lua").read_text()
    assert f"string.sub(prev_block, #prefix + {len(keys.BLOCK) + 2})" in admission
    # The reader sees what it must: a prose mention is not a name, a built one is.
    assert built_kinds("-- prefix .. 'vh:' .. visitor\nlocal k = ARGV[1] .. 'req:' .. r") == {"req"}


@pytest.fixture
async def aredis(redis_url: str, redis_client: redis.Redis) -> AsyncIterator[Redis]:
    client = connect(redis_url, 2.0)
    yield client
    await client.aclose()


def names_in(client: redis.Redis) -> set[str]:
    return {key.decode() for key in client.scan_iter(count=500)}


async def test_the_scripts_write_and_read_the_names_keys_gives(
    aredis: Redis, redis_client: redis.Redis
) -> None:
    policies = load_policies()
    admission = Admission(aredis, policies)
    visitor, previous = secrets.token_hex(16), secrets.token_hex(16)
    network = NetworkId(secrets.token_hex(16), 48, NetworkLimits.model_validate(
        {"concurrent_sessions": 5, "sessions_per_hour": 5, "sessions_per_day": 5,
         "unjoined_tokens": 5}
    ))  # fmt: skip
    session_id = secrets.token_urlsafe(12)
    away_from_bucket_edge(redis_client, 3600)
    now = redis_now(redis_client)
    hour, day = int(now // 3600), int(now // 86_400)
    admitted = await admission.admit(
        visitor=VisitorId(visitor, previous),
        session_id=session_id,
        persona="agence-immo-fr",
        duration_s=120,
        record={"session_id": session_id, "visitor": visitor, "status": "issued"},
        networks=[network],
    )
    assert isinstance(admitted, Admitted)
    net = network.pseudonym
    assert names_in(redis_client) == {
        keys.session(session_id),
        keys.visitor_sessions(visitor),
        keys.visitor_active(visitor),
        keys.visitor_unjoined(visitor),
        keys.global_active(),
        keys.global_unjoined(),
        keys.network_active(net),
        keys.network_unjoined(net),
        keys.visitor_bucket(keys.VISITOR_HOUR, visitor, hour),
        keys.visitor_bucket(keys.VISITOR_DAY, visitor, day),
        keys.visitor_bucket(keys.VISITOR_SECONDS, visitor, day),
        keys.visitor_bucket(keys.NETWORK_HOUR, net, hour),
        keys.visitor_bucket(keys.NETWORK_DAY, net, day),
        keys.global_seconds(day),
        keys.stats(hour),
    }

    # claim.lua finds the visitor's and the network's leases by name: it takes the session
    # out of their unjoined sets and raises their leases.
    lease_before = redis_client.zscore(keys.visitor_active(visitor), session_id)
    claim = await Claims(aredis, policies).claim(session_id, "job-1")
    assert claim.answer is ClaimAnswer.CLAIMED
    for unjoined in (keys.visitor_unjoined(visitor), keys.network_unjoined(net)):
        assert redis_client.zscore(unjoined, session_id) is None
    for active in (keys.visitor_active(visitor), keys.network_active(net)):
        assert (redis_client.zscore(active, session_id) or 0) > (lease_before or 0)

    # release.lua gives back by name: the leases and the reserved seconds of both days.
    released = await admission.release(session_id, 0, "test_done")
    assert released.released and released.refunded_s == 120
    for active in (keys.visitor_active(visitor), keys.network_active(net)):
        assert redis_client.zscore(active, session_id) is None
    assert int(redis_client.get(keys.visitor_bucket(keys.VISITOR_SECONDS, visitor, day)) or 0) == 0
    assert int(redis_client.get(keys.global_seconds(day)) or 0) == 0

    # A block under the previous pseudonym refuses, and admission.lua adds that pseudonym's
    # refusals (named from the block key's tail) to the visitor's.
    redis_client.set(keys.block(previous), "{}", ex=600)
    redis_client.set(keys.visitor_bucket(keys.VISITOR_REFUSALS, previous, day), 5, ex=600)
    refused = await admission.admit(
        visitor=VisitorId(visitor, previous),
        session_id=secrets.token_urlsafe(12),
        persona="agence-immo-fr",
        duration_s=120,
        record={"visitor": visitor, "status": "issued"},
    )
    assert isinstance(refused, Refused) and refused.reason is Refusal.BLOCKED
    assert refused.refusals_today == 1 + 5
    assert redis_client.get(keys.visitor_bucket(keys.VISITOR_REFUSALS, visitor, day)) == b"1"


async def test_the_sales_scripts_write_the_names_keys_gives(
    aredis: Redis, redis_client: redis.Redis
) -> None:
    store = RequestStore(aredis, load_policies().retention, load_request_rules(), "p" * 32)
    form = SalesForm("Ada", "ada@example.com", None, "Acme", "A demo, please.", "en")
    visitor = secrets.token_hex(16)
    away_from_bucket_edge(redis_client, 86_400)
    day = int(redis_now(redis_client) // 86_400)
    accepted = await store.submit(form, visitor, notify=True)
    assert isinstance(accepted, Accepted)
    reference, email = accepted.reference, store.email_hash(form.email)
    assert names_in(redis_client) == {
        keys.request(reference),
        keys.requests_by_email(email),
        keys.requests_pending(),
        keys.visitor_bucket(keys.REQUESTS_VISITOR_DAY, visitor, day),
        keys.requests_global_day(day),
    }
    # The queue script names the record from its reference, the erase script the index
    # from the record's email hash.
    assert await store.claim_due(60, 10) == [(reference, 1)]
    assert redis_client.hget(keys.request(reference), "notify_attempts") == b"1"
    assert await store.erase([reference]) == 1
    assert not redis_client.exists(keys.request(reference), keys.requests_by_email(email))


# --- no key spelled by hand outside redisdb/ ---------------------------------------------

KIND_AT_START = re.compile(rf"^(?:{'|'.join(map(re.escape, KINDS.values()))}):")


def docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes: prose may show a key's name."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def is_prefix(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr in ("PREFIX", "TAG")


def hand_made_names(source: str, filename: str = "<source>") -> list[str]:
    """Where `source` builds a key name itself: a string holding our tag, or starting with
    one of our kinds and a colon, or the prefix glued to something (passing keys.PREFIX to
    a Lua script as an argument is how the scripts get it, and is fine)."""
    tree = ast.parse(source, filename)
    prose = docstrings(tree)
    found = []
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            if keys.TAG in node.value or "ocf:" in node.value or KIND_AT_START.match(node.value):
                found.append(f"{where} {node.value[:60]!r}")
        elif isinstance(node, ast.JoinedStr) and any(
            isinstance(part, ast.FormattedValue) and is_prefix(part.value) for part in node.values
        ):
            found.append(f"{where} an f-string on the key prefix")
        elif isinstance(node, ast.BinOp) and (is_prefix(node.left) or is_prefix(node.right)):
            found.append(f"{where} the key prefix glued to a string")
    return found


def test_the_scan_finds_hand_made_names():
    assert hand_made_names('"""The record, `{ocf}:sess:<id>`."""\n') == []
    assert hand_made_names("run(args=[keys.PREFIX, session_id])\n") == []
    assert hand_made_names("t = 'ocf.end_reason'\nm = 'ocf_tokens_issued'\n") == []
    for made in (
        'k = "{ocf}:sess:" + sid\n',
        'k = f"{{ocf}}:sess:{sid}"\n',
        'k = f"{keys.PREFIX}sess:{sid}"\n',
        'k = keys.PREFIX + "sess:" + sid\n',
        'k = "vh:" + visitor\n',
    ):
        assert hand_made_names(made), made


def test_no_key_name_is_spelled_outside_redisdb():
    found = [
        hit
        for name, path in sorted(our_modules().items())
        if name.partition(".")[0] != "redisdb"
        for hit in hand_made_names(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert not found, "key names built outside redisdb/keys.py:\n" + "\n".join(found)


def test_the_scan_reads_every_production_package():
    packages = {name.partition(".")[0] for name in our_modules()}
    assert {"agent", "ops", "policies", "sales", "sessions", "redisdb"} <= packages
    assert not packages & {"tests", "bench"}
    assert ROOT / "redisdb/keys.py" in our_modules().values()
