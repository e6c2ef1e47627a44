"""Privacy, checked on what is really stored and logged after a run.

Two real token-server processes behind a "proxy" (TRUSTED_PROXIES=127.0.0.1/32), at DEBUG
log level so every log line that can exist does, serve a distinctive IPv4 and IPv6 address
and a distinctive user agent through every path: tokens in both forms, refusals, bad input,
the catalogue, a preflight, a release. Then every Redis key and value and every log line
is searched for the address and user agent in any form we can think of (whole, partial,
the IPv6 /64 text, packed bytes, unsalted hashes). Every key must have a TTL within the
policy, and session records hold only the categories the privacy policy names.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from policies import keys, load_policies
from policies.admission import Admission
from policies.claim import CLAIM_FIELDS as CLAIM_WRITES
from policies.claim import Claims
from sessions.redis_conn import connect
from tests.support import ServerProcess
from tests.token_support import dump_redis, running_servers, session_record, settings_env

IPV4 = "198.51.100.77"
IPV6 = "2001:db8:4f2a:77c1:1234:5678:9abc:def0"
IPV6_SAME_64 = "2001:db8:4f2a:77c1::1"
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) OcfPrivacyProbe/9.7731 AppleWebKit/537.36"
    " (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
# An app/scraper user agent: the parser's "family" would be client-written text.
APP_USER_AGENT = "OcfScraperProbe/4.2 CFNetwork/1410.0.3 Darwin/22.6.0"

# What the session record may hold: the LiveKit session, the selected agent, the duration,
# technical connection data (pseudonyms, coarse UA family), and lifecycle bookkeeping.
MINT_FIELDS = {
    "session_id", "room", "persona", "language", "visitor", "ua", "ua_family", "salt_period",
    "max_duration_s", "join_window_s", "status", "issued_at", "lease_expires_at", "day",
    "reserved_s",
}  # fmt: skip
RELEASE_FIELDS = {"released_at", "used_s", "refunded_s", "release_reason"}
# The worker's claim (policies/claim.lua): which LiveKit job took the session, and when.
# A job id is LiveKit's technical handle of the session's agent, nothing about the visitor.
CLAIM_FIELDS = {"claimed_by", "claimed_at"}


def forbidden_texts() -> list[bytes]:
    v6 = ipaddress.IPv6Address(IPV6)
    net = ipaddress.IPv6Network((v6, 64), strict=False)
    texts = [
        IPV4, "198.51.100.", "51.100.77", IPV6, IPV6.upper(), v6.exploded, IPV6_SAME_64,
        "2001:db8:4f2a:77c1", "2001:0db8:4f2a:77c1", str(net), str(net.network_address),
        "4f2a:77c1", USER_AGENT, "OcfPrivacyProbe", APP_USER_AGENT, "OcfScraperProbe",
    ]  # fmt: skip
    out = [t.encode() for t in texts]
    # Unsalted hashes would be as good as the address (a 2^32 space is searched in minutes).
    for value in (IPV4, IPV6, str(net), str(net.network_address), USER_AGENT, APP_USER_AGENT):
        for algo in ("md5", "sha1", "sha256"):
            out.append(hashlib.new(algo, value.encode()).hexdigest().encode())
    out.append(ipaddress.IPv4Address(IPV4).packed)
    out.append(v6.packed[:8])
    return out


def leaks(blob: bytes) -> list[bytes]:
    lowered = blob.lower()
    return [t for t in forbidden_texts() if t.lower() in lowered]


@pytest.fixture(scope="module")
def servers(redis_url: str) -> Iterator[list[ServerProcess]]:
    # The shipped policies: one session at a time, so refusals happen naturally.
    env = settings_env(redis_url, TRUSTED_PROXIES="127.0.0.1/32", LOG_LEVEL="DEBUG")
    env.pop("ALLOWED_ORIGINS")
    with running_servers([env, env]) as started:
        yield started


def exercise(servers: list[ServerProcess]) -> list[str]:
    """Every path a visitor can take; returns the session ids minted."""
    minted = []
    first, second = (httpx.Client(base_url=s.base_url, timeout=10) for s in servers)
    with first, second:
        for address, neighbour, agent in (
            (IPV4, IPV4, USER_AGENT),
            (IPV6, IPV6_SAME_64, APP_USER_AGENT),
        ):
            headers = {"X-Forwarded-For": address, "User-Agent": agent}
            neighbour_headers = {**headers, "X-Forwarded-For": f"203.0.113.9, {neighbour}"}
            ok = first.post("/api/token", json={"agent": "agence-immo-fr"}, headers=headers)
            assert ok.status_code == 201, ok.text
            minted.append(ok.json()["session_id"])
            # Refused on the other process (same visitor: one session at a time).
            refused = second.post(
                "/api/token",
                json={"room_config": {"agents": [{"agent_name": "realty-desk-en"}]},
                      "participant_identity": address, "participant_metadata": USER_AGENT},
                headers=neighbour_headers,
            )  # fmt: skip
            assert refused.status_code == 429, refused.text
            bad = [
                second.post("/api/token", content=b"{", headers={**headers,
                            "Content-Type": "application/json"}),
                second.post("/api/token", json={"agent": "nope-persona"}, headers=headers),
                second.post("/api/token", json={"agent": 5}, headers=headers),
                second.post("/api/token", json={"agent": "agence-immo-fr"},
                            headers={**headers, "Origin": "https://evil.example"}),
                second.post("/api/token", json={"agent": "agence-immo-fr"},
                            headers={**headers, "X-Pad": "p" * 10_000}),
            ]  # fmt: skip
            assert [r.status_code for r in bad] == [422, 404, 422, 403, 431]
            assert first.get("/api/agents", headers=headers).status_code == 200
            preflight = first.options(
                "/api/token",
                headers={**headers, "Origin": servers[0].base_url,
                         "Access-Control-Request-Method": "POST"},
            )  # fmt: skip
            assert preflight.status_code == 204
    return minted


async def claim_and_release(redis_url: str, session_id: str) -> None:
    """The session's life as a worker leads it: claimed, then released."""
    client = connect(redis_url, 2.0)
    try:
        assert (await Claims(client, load_policies()).claim(session_id, "AJ_privacy")).ours
        result = await Admission(client, load_policies()).release(session_id, 42, "user_hangup")
        assert result.released
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def after_run(servers: list[ServerProcess], redis_url: str) -> dict[str, Any]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    minted = exercise(servers)
    asyncio.run(claim_and_release(redis_url, minted[0]))
    stored = dump_redis(client)
    records = {sid: session_record(client, sid) for sid in minted}
    client.close()
    for server in servers:
        server.stop()  # flushes and closes the logs
    return {
        "minted": minted,
        "stored": stored,
        "records": records,
        "logs": [s.logs() for s in servers],
    }


def test_redis_holds_no_address_or_user_agent(after_run: dict[str, Any]) -> None:
    stored = after_run["stored"]
    kinds = {keys.kind_of(k.name.decode()) for k in stored}
    # The run reached every kind of key admission writes, so the search below saw them.
    assert {keys.SALT, keys.SESSION, keys.VISITOR_SESSIONS, keys.VISITOR_ACTIVE,
            keys.VISITOR_HOUR, keys.VISITOR_DAY, keys.VISITOR_SECONDS, keys.VISITOR_REFUSALS,
            keys.GLOBAL_ACTIVE, keys.GLOBAL_SECONDS, keys.STATS} <= kinds  # fmt: skip
    assert "foreign" not in kinds
    for key in stored:
        assert leaks(key.blob()) == [], key.name


def test_every_key_expires_within_the_policy(after_run: dict[str, Any]) -> None:
    retention = load_policies().retention
    for key in after_run["stored"]:
        assert key.ttl > 0, f"{key.name!r} never expires"
        assert key.ttl <= retention.max_ttl_s, key.name
        kind = keys.kind_of(key.name.decode())
        if kind == keys.SESSION:
            assert key.ttl <= retention.session_ttl_s
        if kind in (keys.VISITOR_SESSIONS, keys.BLOCK):
            assert key.ttl <= retention.pseudonym_ttl_s
        if kind == keys.SALT:
            assert key.ttl <= retention.salt_ttl_s


def test_session_records_hold_only_the_allowed_categories(after_run: dict[str, Any]) -> None:
    released, *others = after_run["minted"]
    assert set(CLAIM_WRITES) <= MINT_FIELDS | CLAIM_FIELDS  # the claim writes nothing else
    assert set(after_run["records"][released]) == MINT_FIELDS | CLAIM_FIELDS | RELEASE_FIELDS
    for session_id in others:
        record = after_run["records"][session_id]
        assert set(record) == MINT_FIELDS
    for record in after_run["records"].values():
        assert re.fullmatch(r"[0-9a-f]{32}", record["visitor"])
        assert re.fullmatch(r"[0-9a-f]{32}", record["ua"])
        # Coarse and from the allow-list only: the app's own name never appears.
        assert record["ua_family"] in {"Chrome/Linux/desktop", "Other/iOS/mobile"}
    families = {r["ua_family"] for r in after_run["records"].values()}
    assert families == {"Chrome/Linux/desktop", "Other/iOS/mobile"}
    # The IPv4 and IPv6 visitors are different people with different pseudonyms.
    visitors = {r["visitor"] for r in after_run["records"].values()}
    assert len(visitors) == 2


def test_logs_hold_no_address_or_user_agent(after_run: dict[str, Any]) -> None:
    for text in after_run["logs"]:
        lines = [line for line in text.splitlines() if line.strip()]
        for line in lines:
            json.loads(line)  # structured: one JSON object per line
            assert leaks(line.encode()) == [], line
    everything = "\n".join(after_run["logs"])
    # The search above looked at real traffic logs, not an empty file.
    assert everything.count('"token issued"') == 2
    assert everything.count('"token refused"') == 2
    assert '"request"' in everything
