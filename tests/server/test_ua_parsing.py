"""User-agent parsing is paid only for admitted requests (issue 11, item 4).

ua-parser costs milliseconds for a long, never-seen user agent. A flood of refused requests
each carrying a new random one must not make the server parse any of them; admitted
requests still get their pseudonym and coarse family in the session record. The parser
calls are counted through the real endpoint (the real parser, wrapped to count).
"""

from __future__ import annotations

import secrets
import string
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from ua_parser import parse as parse_ua

from policies import pseudonyms
from redisdb import keys
from tests.server.support import asgi_client, make_app, session_record
from tests.support import write_policies

BODY = {"agent": "agence-immo-fr"}
CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/131.0.0.0 Safari/537.36 UaParsingProbe/1"
)
ALPHABET = string.ascii_letters + string.digits + " ;/()._-,:"


def random_user_agent() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(500))


@pytest.fixture
def parser_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every user agent handed to ua-parser (which still does the parsing)."""
    calls: list[str] = []

    def counting(user_agent: str) -> Any:
        calls.append(user_agent)
        return parse_ua(user_agent)

    monkeypatch.setattr(pseudonyms, "parse_ua", counting)
    return calls


@pytest.fixture
async def http(redis_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    # The shipped limits: one call at a time per visitor, so the second request is refused.
    app = make_app(redis_url, write_policies(tmp_path), trusted_proxies=["127.0.0.1/32"])
    async with asgi_client(app) as client:
        yield client


async def post(http: httpx.AsyncClient, address: str, user_agent: str) -> httpx.Response:
    headers = {"X-Forwarded-For": address, "User-Agent": user_agent}
    return await http.post("/api/token", json=BODY, headers=headers)


async def test_refusals_never_parse_the_user_agent(
    http: httpx.AsyncClient, redis_client: redis.Redis, parser_calls: list[str]
) -> None:
    first = await post(http, "198.51.100.31", CHROME)
    assert first.status_code == 201, first.text
    assert parser_calls == [CHROME]

    # The same visitor again, each time with a user agent nobody has seen: all refused
    # (429, then 403 once the automatic defence blocks them), none parsed.
    for _ in range(40):
        refused = await post(http, "198.51.100.31", random_user_agent())
        assert refused.status_code in (429, 403), refused.text
    assert parser_calls == [CHROME]
    refusals = list(redis_client.scan_iter(match=keys.pattern(keys.VISITOR_REFUSALS)))
    assert len(refusals) == 1 and int(redis_client.get(refusals[0]) or 0) == 40

    # The admitted session was described all the same (pseudonym and coarse family only).
    record = session_record(redis_client, first.json()["session_id"])
    assert record["ua_family"] == "Chrome/Linux/desktop"
    assert len(record["ua"]) == 32 and record["ua"] not in CHROME


async def test_admitted_requests_record_the_user_agent_once_parsed(
    http: httpx.AsyncClient, redis_client: redis.Redis, parser_calls: list[str]
) -> None:
    unseen = random_user_agent()
    admitted = await post(http, "198.51.100.32", unseen)
    assert admitted.status_code == 201, admitted.text
    assert parser_calls == [unseen]
    # A browser seen before is described in the admission's own write, without parsing.
    again = await post(http, "198.51.100.33", unseen)
    assert again.status_code == 201, again.text
    assert parser_calls == [unseen]

    records = [session_record(redis_client, r.json()["session_id"]) for r in (admitted, again)]
    for record in records:
        assert record["ua_family"] == "Other/Other/other"
        assert len(record["ua"]) == 32
        assert unseen not in str(record)
    # One salt, one user agent: one pseudonym, whichever path wrote it.
    assert records[0]["ua"] == records[1]["ua"]
    assert records[0]["visitor"] != records[1]["visitor"]
    for record in records:
        assert redis_client.ttl(keys.session(record["session_id"])) > 0
