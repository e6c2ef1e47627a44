"""The ops CLI (`python -m ops ...`) in subprocesses against a real Redis, with data made
by a real token server (tokens requested from given addresses through a trusted proxy)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from redis.asyncio import Redis as AsyncRedis

from policies import load_policies
from policies.admission import Admission
from policies.client_address import parse_ip
from policies.pseudonyms import VisitorHasher
from redisdb import keys
from tests.ops.support import (
    HASH_SECRET,
    ops_env,
    ops_json,
    request_token,
    run_ops,
    running_ops_stack,
)
from tests.server.support import dump_redis, session_record
from tests.support import ROOT, RedisServer, ServerProcess

SESSION_FIELDS = {
    "session_id", "issued_at", "persona", "language", "status", "end_reason", "duration_s",
    "visitor", "ua_family", "turns", "connection_quality",
}  # fmt: skip
BUCKET_FIELDS = {
    "start", "issued", "refused", "refusals", "personas", "sessions", "end_reasons",
    "never_joined", "given_back", "minutes", "cost",
}  # fmt: skip


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[ServerProcess, RedisServer, dict[str, str]]]:
    """A Redis and a token server of this module's own: tests tell their data apart by
    address (each uses its own), so nothing is flushed under the server's salt cache."""
    with running_ops_stack() as s:
        yield s


def client(stack: Any) -> redis.Redis:
    r: redis.Redis = stack[1].client()
    return r


def issued(response: Any) -> str:
    assert response.status_code == 201, response.text
    return str(response.json()["session_id"])


def visitor_of(r: redis.Redis, session_id: str) -> str:
    return session_record(r, session_id)["visitor"]


def untouched(r: redis.Redis, visitor: str) -> list[tuple[bytes, str, tuple[bytes, ...]]]:
    """Everything tied to a visitor, minus the TTLs (they tick)."""
    return sorted(
        (k.name, k.kind, k.contents) for k in dump_redis(r) if visitor.encode() in k.blob()
    )


async def worker_ends(url: str, session_id: str, used_s: float, usage: dict[str, str]) -> None:
    """What the worker does at the end of a call: one release with its end record."""
    r = AsyncRedis.from_url(url)
    try:
        released = await Admission(r, load_policies()).release(
            session_id, used_s, "user_hangup", usage
        )
        assert released.released
    finally:
        await r.aclose()


def test_sessions_lists_and_filters(stack: Any) -> None:
    server, _, env = stack
    first = issued(request_token(server.base_url, "198.51.100.10"))
    assert request_token(server.base_url, "198.51.100.10").status_code == 429
    other = issued(request_token(server.base_url, "198.51.100.11", persona="realty-desk-en"))

    result = ops_json(env, "sessions")
    assert set(result) == {"since", "count", "sessions"}
    rows = {row["session_id"]: row for row in result["sessions"]}
    assert {first, other} <= set(rows)
    for row in result["sessions"]:
        assert set(row) == SESSION_FIELDS
    assert rows[first]["status"] == "issued" and rows[first]["persona"] == "agence-immo-fr"

    only = ops_json(env, "sessions", "--persona", "realty-desk-en")["sessions"]
    assert other in {r["session_id"] for r in only}
    assert all(r["persona"] == "realty-desk-en" for r in only)
    assert ops_json(env, "sessions", "--status", "ended")["sessions"] == []

    table = run_ops(env, "sessions", "--limit", "5")
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split()[:3] == ["issued", "(UTC)", "session"]
    assert first in table.stdout and "session(s) since 24h ago" in table.stdout

    bad = run_ops(env, "sessions", "--persona", "nobody-here")
    assert bad.returncode == 2 and "no persona called" in bad.stderr
    assert run_ops(env, "sessions", "--since", "forever").returncode == 2


async def test_stats_minutes_refusals_and_cost(stack: Any) -> None:
    server, redis_server, env = stack
    session_id = issued(request_token(server.base_url, "198.51.100.20", persona="after-hours-en"))
    assert request_token(server.base_url, "198.51.100.20").status_code == 429
    usage = {
        "status": "ended", "end_reason": "user_hangup", "duration_s": "90.0",
        "llm_prompt_tokens": "12000", "llm_completion_tokens": "800",
        "stt_audio_s": "85.0", "tts_chars": "1500", "turns": "7",
    }  # fmt: skip
    await worker_ends(redis_server.url, session_id, 90.0, usage)

    result = ops_json(env, "stats")
    assert set(result) == {"by", "currency", "buckets", "total", "today"}
    assert len(result["buckets"]) == 24 and result["by"] == "hour"
    for bucket in result["buckets"]:
        assert set(bucket) == BUCKET_FIELDS
    total = result["total"]
    assert total["issued"] >= 1 and total["personas"]["after-hours-en"] >= 1
    assert total["refusals"]["visitor_concurrent"] >= 1
    assert total["end_reasons"]["user_hangup"] == 1 and total["sessions"]["ended"] == 1
    assert total["minutes"] == pytest.approx(1.5)

    prices = yaml.safe_load((ROOT / "policies" / "costs.yaml").read_text())
    pm, pmil = prices["per_minute"], prices["per_million"]
    expected = (
        1.5 * (pm["livekit_agent_session"] + pm["livekit_participant"])
        + 85 / 60 * pm["stt_audio"]
        + 12000 / 1e6 * pmil["llm_prompt_tokens"]
        + 800 / 1e6 * pmil["llm_completion_tokens"]
        + 1500 / 1e6 * pmil["tts_chars"]
    )
    assert total["cost"] == pytest.approx(expected, abs=1e-4)
    assert result["currency"] == prices["currency"]
    assert result["today"]["minutes_ceiling"] == 900

    days = ops_json(env, "stats", "--by", "day", "--count", "3")
    assert len(days["buckets"]) == 3 and days["total"]["issued"] == total["issued"]
    text = run_ops(env, "stats").stdout
    assert "refusals by reason" in text and "visitor_concurrent=" in text
    assert "minutes reserved (daily ceiling)" in text


def test_top_flags_automated_visitors(stack: Any) -> None:
    server, _, env = stack
    r = client(stack)
    bot = issued(
        request_token(
            server.base_url, "198.51.100.30", ua="Googlebot/2.1 (+http://www.google.com/bot.html)"
        )
    )
    for _ in range(9):  # keeps asking while its call is open: 9 refusals
        assert request_token(server.base_url, "198.51.100.30").status_code == 429
    person = issued(request_token(server.base_url, "198.51.100.31"))
    script = issued(request_token(server.base_url, "198.51.100.32", ua="python-requests/2.32.3"))

    rows = {row["visitor"]: row for row in ops_json(env, "top", "--by", "refusals")["visitors"]}
    flagged = rows[visitor_of(r, bot)]
    assert flagged["refusals"] == 9 and flagged["sessions"] == 1
    assert set(flagged["flags"]) == {"refusals", "bot_user_agent"} and flagged["automated"]
    assert rows[visitor_of(r, script)]["flags"] == ["non_browser_user_agent"]
    calm = rows[visitor_of(r, person)]
    assert calm["flags"] == [] and not calm["automated"]
    assert set(calm) == {
        "visitor", "sessions", "minutes", "refusals", "never_joined", "short_sessions",
        "user_agents", "ua_families", "blocked", "block_reason", "flags", "automated",
    }  # fmt: skip
    ranked = ops_json(env, "top", "--by", "refusals")["visitors"]
    assert ranked[0]["visitor"] == visitor_of(r, bot)
    table = run_ops(env, "top").stdout
    assert "bot_user_agent" in table and "automated?" in table


def test_block_unblock_blocks(stack: Any) -> None:
    server, _, env = stack
    r = client(stack)
    session_id = issued(request_token(server.base_url, "198.51.100.40"))
    visitor = visitor_of(r, session_id)

    done = ops_json(env, "block", visitor, "--for", "2h", "--reason", "scripted flood")
    assert done["blocked"]["visitor"] == visitor and done["blocked"]["by"] == "ops"
    assert 7100 < r.ttl(keys.block(visitor)) <= 7200
    refused = request_token(server.base_url, "198.51.100.40")
    assert refused.status_code == 403 and refused.json()["error"] == "blocked"

    listed = {b["visitor"]: b for b in ops_json(env, "blocks")["blocks"]}
    assert listed[visitor]["reason"] == "scripted flood" and listed[visitor]["ttl_s"] <= 7200
    assert set(listed[visitor]) == {"visitor", "reason", "by", "created_at", "expires_at", "ttl_s"}
    assert "scripted flood" in run_ops(env, "blocks").stdout

    assert ops_json(env, "unblock", visitor) == {"visitor": visitor, "unblocked": True}
    assert ops_json(env, "unblock", visitor)["unblocked"] is False
    assert r.exists(keys.block(visitor)) == 0


def test_block_refuses_bad_input_and_changes_nothing(stack: Any) -> None:
    _, _, env = stack
    r = client(stack)
    before = {k for k in r.scan_iter(match=keys.pattern(keys.BLOCK))}
    visitor = "ab" * 16
    cases = [
        ("not-a-pseudonym", "--for", "1d", "--reason", "x"),
        (visitor, "--for", "31d", "--reason", "longer than policy"),
        (visitor, "--for", "soon", "--reason", "x"),
        (visitor, "--for", "1d", "--reason", "   "),
    ]
    for args in cases:
        done = run_ops(env, "block", *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.startswith("ops block:")
    assert {k for k in r.scan_iter(match=keys.pattern(keys.BLOCK))} == before


async def test_lookup_and_erase_across_two_salt_periods(stack: Any) -> None:
    """Sessions from one address under the current salt and the previous period's salt
    (both still live, as they are for salt_period_days + retention): lookup finds all of
    them, erase leaves nothing of them but the security block (kept until it expires, and
    said so), and another visitor is untouched."""
    _, redis_server, env = stack
    sync = client(stack)
    policies = load_policies()
    r = AsyncRedis.from_url(redis_server.url)
    hasher = VisitorHasher(r, HASH_SECRET, policies.retention)
    admission = Admission(r, policies)
    address, neighbour = parse_ip("2001:db8:aa:bb::17"), parse_ip("203.0.113.99")
    assert address is not None and neighbour is not None
    period_s = policies.retention.salt_period_s
    now = float(sync.time()[0])
    current = await hasher.current_salt(now)
    previous = await hasher.current_salt(now - period_s)
    assert previous.period == current.period - 1

    async def admit(visitor: str, session_id: str, release: bool) -> None:
        record = {
            "session_id": session_id, "visitor": visitor, "persona": "agence-immo-fr",
            "status": "issued", "ua": "f" * 32, "ua_family": "Chrome/Linux/desktop",
        }  # fmt: skip
        decision = await admission.admit(
            visitor=visitor, session_id=session_id, persona="agence-immo-fr",
            duration_s=120, record=record,
        )  # fmt: skip
        assert hasattr(decision, "issued_at"), decision
        if release:
            await admission.release(session_id, 30, "user_hangup", {"status": "ended"})

    old_visitor = hasher.visitor(previous, address)
    new_visitor = hasher.visitor(current, address)
    # Another host in the same IPv6 /64 is the same visitor (that is the pseudonym's unit).
    assert hasher.visitor(current, parse_ip("2001:db8:aa:bb::99")) == new_visitor  # type: ignore[arg-type]
    other_visitor = hasher.visitor(current, neighbour)
    await admit(old_visitor, "erase-old-0001", release=True)
    await admit(new_visitor, "erase-new-0001", release=True)
    await admit(new_visitor, "erase-new-0002", release=False)
    await admit(other_visitor, "keep-other-0001", release=False)
    await r.set(keys.block(new_visitor), '{"reason": "test", "by": "ops"}', ex=3600)
    await r.aclose()
    others_before = untouched(sync, other_visitor)

    found = ops_json(env, "lookup", "--ip", "2001:db8:aa:bb::17")
    assert found["address"] == "2001:db8:aa:bb::/64"
    assert {p["visitor"] for p in found["pseudonyms"]} >= {old_visitor, new_visitor}
    assert {s["session_id"] for s in found["sessions"]} == {
        "erase-old-0001", "erase-new-0001", "erase-new-0002",
    }  # fmt: skip
    kinds = found["found"]["keys_by_kind"]
    assert kinds["sess"] == 3 and kinds["vsess"] == 2 and kinds["block"] == 1
    assert found["found"]["sessions"] == 3
    text = run_ops(env, "lookup", "--ip", "2001:db8:aa:bb::17").stdout
    assert "erase-old-0001" in text and f"period {previous.period}: {old_visitor}" in text

    erased = ops_json(env, "erase", "--ip", "2001:db8:aa:bb::17")
    assert erased["deleted"]["sessions"] == 3
    assert erased["remaining"] == {"sessions": 0, "keys_by_kind": {}}
    assert erased["kept"]["keys_by_kind"] == {"block": 1}
    for stored in dump_redis(sync):
        if keys.kind_of(stored.name.decode()) == keys.BLOCK:
            continue  # kept (security); the audit log's entries name no pseudonym
        blob = stored.blob()
        for secret in (old_visitor, new_visitor, "erase-old-0001", "erase-new-0001",
                       "erase-new-0002"):  # fmt: skip
            assert secret.encode() not in blob, (stored.name, secret)
    assert sync.exists(keys.block(new_visitor)) == 1
    assert untouched(sync, other_visitor) == others_before
    assert ops_json(env, "lookup", "--ip", "2001:db8:aa:bb::17")["found"]["sessions"] == 0
    again = ops_json(env, "erase", "--ip", "2001:db8:aa:bb::17")
    assert again["deleted"] == {"sessions": 0, "keys_by_kind": {}}
    sync.delete(keys.block(new_visitor))

    bad = run_ops(env, "erase", "--ip", "not-an-address")
    assert bad.returncode == 2 and "not an IPv4 or IPv6 address" in bad.stderr


def test_audit_catches_missing_and_excessive_ttl(stack: Any) -> None:
    server, _, env = stack
    r = client(stack)
    issued(request_token(server.base_url, "198.51.100.50"))
    clean = run_ops(env, "audit", "--json")
    assert clean.returncode == 0, clean.stdout
    report = json.loads(clean.stdout)
    assert report["ok"] and report["breaches"] == []
    assert {"sess", "vsess", "salt", "stats", "gact", "vact"} <= set(report["kinds"])
    sess = report["kinds"]["sess"]
    assert sess["keys"] >= 1 and 0 < sess["max_ttl_s"] <= sess["policy_max_s"]

    r.set("{ocf}:block:" + "cd" * 16, "{}")  # no TTL at all
    r.set("{ocf}:showcase", "{}", ex=200 * 86_400)  # beyond any policy
    r.set("someone-elses-key", "x")  # not ours, still must expire
    try:
        done = run_ops(env, "audit", "--json")
        assert done.returncode == 1
        breaches = {b["key"]: b for b in json.loads(done.stdout)["breaches"]}
        assert breaches["{ocf}:block:" + "cd" * 16]["problem"] == "no_ttl"
        assert breaches["{ocf}:showcase"]["problem"] == "ttl_above_policy"
        assert breaches["{ocf}:showcase"]["policy_max_s"] == 60 * 86_400
        assert breaches["someone-elses-key"]["problem"] == "no_ttl"
        text = run_ops(env, "audit")
        assert text.returncode == 1 and "BREACH: 3 key(s)" in text.stdout
    finally:
        r.delete("{ocf}:block:" + "cd" * 16, "{ocf}:showcase", "someone-elses-key")
    assert run_ops(env, "audit").returncode == 0


def test_showcase_list_set_reset(stack: Any) -> None:
    _, _, env = stack
    r = client(stack)
    listed = ops_json(env, "showcase", "list")["personas"]
    assert [p["id"] for p in listed][:2] == ["agence-immo-fr", "realty-desk-en"]
    assert set(listed[0]) == {
        "id", "display_name", "language", "enabled", "featured", "order", "overridden",
    }  # fmt: skip
    try:
        row = ops_json(env, "showcase", "set", "after-hours-en", "--order", "1", "--feature")
        assert row["persona"]["order"] == 1 and row["persona"]["featured"] is True
        assert row["persona"]["overridden"] == ["featured", "order"]
        ttl = r.ttl(keys.showcase())
        assert 59 * 86_400 < ttl <= 60 * 86_400
        assert ops_json(env, "showcase", "list")["personas"][0]["id"] == "after-hours-en"
        ops_json(env, "showcase", "set", "realty-desk-en", "--disable")
        ids = [p["id"] for p in ops_json(env, "showcase", "list")["personas"] if p["enabled"]]
        assert "realty-desk-en" not in ids
        assert "realty-desk-en" in run_ops(env, "showcase", "list").stdout

        for args in (("set", "no-such-persona", "--enable"), ("set", "after-hours-en"),
                     ("set", "after-hours-en", "--order", "-3"), ("reset",)):  # fmt: skip
            done = run_ops(env, "showcase", *args)
            assert done.returncode == 2, (args, done.stdout)
        reset = ops_json(env, "showcase", "reset", "after-hours-en")
        assert reset == {"reset": ["after-hours-en"]}
    finally:
        assert run_ops(env, "showcase", "reset", "--all").returncode == 0
    assert r.exists(keys.showcase()) == 0
    assert all(not p["overridden"] for p in ops_json(env, "showcase", "list")["personas"])


def test_sweep_closes_tokens_never_used(stack: Any) -> None:
    server, _, env = stack
    r = client(stack)
    session_id = issued(request_token(server.base_url, "198.51.100.60"))
    record = session_record(r, session_id)
    visitor, day = record["visitor"], record["day"]
    assert r.get(keys.visitor_bucket(keys.VISITOR_SECONDS, visitor, int(day))) == b"300"
    # Time passes beyond the join window (+ lease margin) without anyone joining.
    r.hset(keys.session(session_id), "issued_at", f"{float(record['issued_at']) - 400:.3f}")

    assert ops_json(env, "sweep") == {"never_joined": [session_id]}
    closed = session_record(r, session_id)
    assert closed["status"] == "never_joined" and closed["release_reason"] == "never_joined"
    assert closed["refunded_s"] == "300"
    assert r.zscore(keys.global_active(), session_id) is None
    assert r.get(keys.visitor_bucket(keys.VISITOR_SECONDS, visitor, int(day))) == b"0"
    assert ops_json(env, "sweep") == {"never_joined": []}
    # The visitor's slot is free again before the lease would have run out.
    issued(request_token(server.base_url, "198.51.100.60"))
    rows = ops_json(env, "sessions", "--status", "never_joined")["sessions"]
    assert session_id in {row["session_id"] for row in rows}
    assert ops_json(env, "stats")["total"]["never_joined"] >= 1


def test_redis_unreachable_exits_3(tmp_path: Path) -> None:
    env = ops_env("redis://127.0.0.1:1/0")
    done = run_ops(env, "blocks")
    assert done.returncode == 3 and "Redis unreachable" in done.stderr


def test_every_command_has_json(stack: Any) -> None:
    _, _, env = stack
    for args in (("sessions",), ("stats",), ("top",), ("blocks",), ("audit",),
                 ("showcase", "list"), ("lookup", "--ip", "192.0.2.1"), ("sweep",)):  # fmt: skip
        done = run_ops(env, *args, "--json")
        assert done.returncode == 0, (args, done.stderr)
        assert isinstance(json.loads(done.stdout), dict)
