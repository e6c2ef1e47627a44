"""Privacy, checked on what is really stored and logged after a run.

Two real token-server processes behind a "proxy" (TRUSTED_PROXIES=127.0.0.1/32), at DEBUG
log level so every log line that can exist does, serve a distinctive IPv4 and IPv6 address
and a distinctive user agent through every path: tokens in both forms, refusals, bad input,
the catalogue, a preflight, a release. A client connecting straight from a distinctive
loopback address (not a proxy: its socket address is the visitor's) tries what uvicorn
itself answers or logs: WebSocket upgrades, unknown pages, bad and malformed HTTP,
oversized headers. Then every Redis key and value and every log line is searched for the
addresses and user agent in any form we can think of (whole, partial, the IPv6 /64 text,
packed bytes, unsalted hashes). Every key must have a TTL within the policy, and session
records hold only the categories the privacy policy names.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import ipaddress
import json
import logging
import re
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from policies import load_policies
from policies.admission import Admission
from policies.claim import CLAIM_FIELDS as CLAIM_WRITES
from policies.claim import Claims
from redisdb import keys
from redisdb.connection import connect
from server.logs import JsonFormatter, PrivacyFilter
from tests.server.support import (
    dump_redis,
    read_until_closed,
    running_servers,
    session_record,
    settings_env,
)
from tests.support import ServerProcess

IPV4 = "198.51.100.77"
IPV6 = "2001:db8:4f2a:77c1:1234:5678:9abc:def0"
IPV6_SAME_64 = "2001:db8:4f2a:77c1::1"
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) OcfPrivacyProbe/9.7731 AppleWebKit/537.36"
    " (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
# A client's own socket address (no proxy in front): loopback, so the test can use it, and
# distinctive, so it cannot be confused with the servers' own 127.0.0.1.
PEER = "127.77.41.9"
# An app/scraper user agent: the parser's "family" would be client-written text.
APP_USER_AGENT = "OcfScraperProbe/4.2 CFNetwork/1410.0.3 Darwin/22.6.0"

# What the session record may hold: the LiveKit session, the selected agent, the duration,
# technical connection data (pseudonyms, coarse UA family), and lifecycle bookkeeping.
MINT_FIELDS = {
    "session_id", "room", "persona", "language", "visitor", "ua", "ua_family", "salt_period",
    "max_duration_s", "join_window_s", "status", "issued_at", "lease_expires_at", "day",
    "reserved_s",
    # The prefix aggregates' pseudonyms (keyed hashes, like `visitor`) and the keyed hash of
    # the secret the page may give the token back with (policies/give_back.py).
    "nets", "release_hash",
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
        PEER, "127.77.41", "77.41.9",
        # The prefix aggregates around them (limits.yaml networks): hashed, never written.
        "198.51.100.0/24", "2001:db8:4f2a::/48", "2001:db8:4f2a:7700::/56", "2001:db8:4f2a::",
    ]  # fmt: skip
    out = [t.encode() for t in texts]
    # Unsalted hashes would be as good as the address (a 2^32 space is searched in minutes).
    values = (IPV4, IPV6, str(net), str(net.network_address), PEER, USER_AGENT, APP_USER_AGENT,
              "198.51.100.0/24", "2001:db8:4f2a::/48", "2001:db8:4f2a:7700::/56",
              # The networks' texts as policies/pseudonyms.py hashes them (keyed).
              "v4/24/c63364", "v6/48/20010db84f2a", "v6/56/20010db84f2a77")  # fmt: skip
    for value in values:
        for algo in ("md5", "sha1", "sha256"):
            out.append(hashlib.new(algo, value.encode()).hexdigest().encode())
    out.append(ipaddress.IPv4Address(IPV4).packed)
    out.append(ipaddress.IPv4Address(PEER).packed)
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


WEBSOCKET = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}
MALFORMED = [
    b"GET / HTTP/1.1\r\nHost: demo\r\nNo colon here\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),  # a TLS hello, plain HTTP port
    b"GET /" + b"a" * 100 + b" HTTP/9.9\r\n\r\n",
    b"POST /api/token HTTP/1.1\r\nHost: demo\r\nContent-Length: -5\r\n\r\n",
    b"POST /api/token HTTP/1.1\r\nHost: demo\r\n" + b"X-Pad: " + b"p" * 20_000 + b"\r\n\r\n",
    b"GET /api/token HTTP/1.1\r\nHost: demo\r\n"
    + b"".join(f"{k}: {v}\r\n".encode() for k, v in WEBSOCKET.items())
    + b"\r\n",
]


def raw_exchange(server: ServerProcess, request: bytes) -> bytes:
    """Send bytes from PEER and read whatever comes back until the server hangs up."""
    with socket.create_connection(("127.0.0.1", server.port), 10, (PEER, 0)) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        return read_until_closed(sock)


def exercise_from_peer(server: ServerProcess) -> None:
    """What a client talking straight to a token server can make uvicorn answer or log."""
    transport = httpx.HTTPTransport(local_address=PEER)
    with httpx.Client(base_url=server.base_url, transport=transport, timeout=10) as client:
        for path in ("/", "/api/token", "/ops", "/livekit/webhook"):
            upgrade = client.get(path, headers=WEBSOCKET)
            assert upgrade.status_code != 101, path  # no WebSocket is served here
        assert client.get("/no-such-page").status_code == 404
        assert client.post("/api/token", content=b"{", headers={
            "Content-Type": "application/json"}).status_code == 422  # fmt: skip
        assert client.post("/api/tokens", json={"agent": "x"}).status_code == 404
    answers = [raw_exchange(server, request) for request in MALFORMED]
    statuses = [a.split(b" ", 2)[1] if a.startswith(b"HTTP/1.1 ") else a[:20] for a in answers]
    assert statuses[:5] == [b"400", b"400", b"400", b"400", b"431"], statuses
    assert statuses[5] != b"101", statuses


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
    exercise_from_peer(servers[1])
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
            keys.GLOBAL_ACTIVE, keys.GLOBAL_SECONDS, keys.STATS, keys.VISITOR_UNJOINED,
            keys.GLOBAL_UNJOINED, keys.NETWORK_ACTIVE, keys.NETWORK_UNJOINED,
            keys.NETWORK_HOUR, keys.NETWORK_DAY} <= kinds  # fmt: skip
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
        # IPv4: its /24; IPv6: its /56 and /48 (limits.yaml networks), as pseudonyms only.
        nets = record["nets"].split(" ")
        assert len(nets) in (1, 2) and all(re.fullmatch(r"[0-9a-f]{32}", n) for n in nets)
        assert re.fullmatch(r"[0-9a-f]{64}", record["release_hash"])
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
    # ...and uvicorn's own lines about the malformed requests.
    assert "Invalid HTTP request received." in everything


def test_the_log_filter_masks_addresses_and_drops_what_callers_said() -> None:
    """The net under every log handler (server.logs.PrivacyFilter), on a real handler and logger."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(PrivacyFilter())
    logger = logging.getLogger("tests.privacy.filter")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning('%s - "WebSocket /" 403', f"{PEER}:51234")
        logger.warning(
            "received user transcript",
            extra={"lk.pii.user_transcript": "my name is Odile", "peer": f"[{IPV6}]:443",
                   "hops": [IPV4, "10.1.2"], "at": "12:30:45", "session_id": "ab12:cd34"},
        )  # fmt: skip
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == '[address]:51234 - "WebSocket /" 403'
    assert "lk.pii.user_transcript" not in second
    assert second["peer"] == "[[address]]:443"
    assert second["hops"] == '["[address]", "10.1.2"]'
    assert (second["at"], second["session_id"]) == ("12:30:45", "ab12:cd34")
    assert leaks(stream.getvalue().encode()) == []
    assert "Odile" not in stream.getvalue()
