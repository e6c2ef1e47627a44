"""`POST /api/requests`: the contract, the record as the privacy policy allows it, every
kind of bad input refused with its message key and nothing changed, the honeypot, the
limits, the call a request follows, Redis down.

The real app in-process (httpx.ASGITransport: the socket peer is chosen per client) on a
real Redis; Redis is compared byte for byte around every refusal.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from policies import load_policies
from policies.model import DAY_S
from redisdb import keys
from sales.identity import REFERENCE, email_hash
from sales.store import RECORD_FIELDS
from tests.sales.support import FORM, OTHER, personal_values, write_request_policies
from tests.server.support import (
    asgi_client,
    away_from_bucket_edge,
    dump_redis,
    make_app,
    session_record,
)
from tests.support import RedisServer

ALLOWED_ORIGIN = "https://www.onecallflow.test"
PEER = "192.0.2.77"
UA_MARK = "QuagliaTestAgent/9.9"
USER_AGENT = f"Mozilla/5.0 (X11; Linux x86_64) {UA_MARK}"
STORED_WITHOUT_MAIL = {
    "reference", "created_at", "updated_at", "status", "email_hash", "name", "email",
    "phone", "company", "message", "language", "page_language", "persona", "session_id",
}  # fmt: skip


@pytest.fixture(scope="module")
def policies_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_request_policies(
        tmp_path_factory.mktemp("policies"),
        limits={"per_visitor_per_day": 50, "global_per_day": 100},
    )


@pytest.fixture(scope="module")
def app(redis_url: str, policies_dir: Path) -> Any:
    return make_app(redis_url, policies_dir, allowed_origins=[ALLOWED_ORIGIN])


@pytest.fixture
async def client(app: Any, redis_client: redis.Redis) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app, peer=PEER) as c:
        c.headers["User-Agent"] = USER_AGENT
        yield c


def snapshot(client: redis.Redis) -> set[tuple[bytes, str, tuple[bytes, ...]]]:
    return {(k.name, k.kind, k.contents) for k in dump_redis(client)}


def record(client: redis.Redis, reference: str) -> dict[str, str]:
    raw: Any = client.hgetall(keys.request(reference))
    return {k.decode(): v.decode() for k, v in raw.items()}


def counted(app: Any, outcome: str) -> float:
    registry = app.state.services.ops.metrics.registry
    return registry.get_sample_value("ocf_sales_requests_total", {"outcome": outcome}) or 0.0


# --- the contract -------------------------------------------------------------------------


async def test_a_request_is_kept_as_the_policy_says(
    app: Any, client: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    # The visitor's own call first: the request follows it.
    minted = await client.post("/api/token", json={"agent": "agence-immo-fr"})
    assert minted.status_code == 201, minted.text
    session_id = minted.json()["session_id"]
    body = {**FORM, "persona": "realty-desk-en", "session_id": session_id}
    response = await client.post("/api/requests", json=body)
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    assert set(response.json()) == {"reference"}
    reference = response.json()["reference"]
    assert REFERENCE.fullmatch(reference)

    stored = record(redis_client, reference)
    assert set(stored) == STORED_WITHOUT_MAIL  # no SMTP settings: no delivery metadata
    assert set(stored) <= RECORD_FIELDS
    for name in ("name", "email", "phone", "company", "message", "language"):
        assert stored[name] == FORM[name], name
    assert stored["page_language"] == "fr"
    # The persona is the call's (its record), not what the page said.
    assert stored["session_id"] == session_id
    assert stored["persona"] == session_record(redis_client, session_id)["persona"]
    assert stored["persona"] == "agence-immo-fr"
    assert stored["status"] == "new"
    assert abs(float(stored["created_at"]) - time.time()) < 60

    # Found by the email's keyed hash (whatever its case), never by the email itself.
    secret = app.state.services.settings.visitor_hash_secret
    hashed = email_hash(secret, FORM["email"].upper())
    assert stored["email_hash"] == hashed
    assert redis_client.smembers(keys.requests_by_email(hashed)) == {reference.encode()}
    retention = load_policies().retention
    longest = retention.sales_requests_ttl_s
    for name in (keys.request(reference), keys.requests_by_email(hashed)):
        assert longest - 60 < redis_client.ttl(name) <= longest

    stored_keys = dump_redis(redis_client)
    kinds = {keys.kind_of(k.name.decode()) for k in stored_keys}
    assert {keys.REQUEST, keys.REQUESTS_BY_EMAIL, keys.REQUESTS_VISITOR_DAY,
            keys.REQUESTS_GLOBAL_DAY} <= kinds  # fmt: skip
    for key in stored_keys:
        blob = key.blob()
        # No address and no user agent anywhere; the form only in its record.
        assert PEER.encode() not in blob and UA_MARK.encode() not in blob, key.name
        assert key.ttl > 0, key.name
        if keys.kind_of(key.name.decode()) in (keys.REQUESTS_VISITOR_DAY,
                                               keys.REQUESTS_GLOBAL_DAY):  # fmt: skip
            assert key.ttl <= DAY_S + 60
        if keys.kind_of(key.name.decode()) != keys.REQUEST:
            for value in personal_values(FORM):
                assert value not in blob, (key.name, value)
    assert counted(app, "accepted") >= 1

    # `ops audit` holds every key to its kind's policy.
    from ops.audit import audit

    report = await audit(app.state.services.ops.ctx)
    assert report.ok, report.breaches


async def test_a_call_that_is_not_the_visitors_own_is_not_linked(
    app: Any, client: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    async with asgi_client(app, peer="192.0.2.78") as someone_else:
        minted = await someone_else.post("/api/token", json={"agent": "agence-immo-fr"})
    assert minted.status_code == 201
    theirs = minted.json()["session_id"]
    for session_id in (theirs, "AAAAAAAAAAAAAAAA"):  # someone else's; one never issued
        body = {**FORM, "persona": "realty-desk-en", "session_id": session_id}
        response = await client.post("/api/requests", json=body)
        assert response.status_code == 201, response.text
        stored = record(redis_client, response.json()["reference"])
        assert "session_id" not in stored
        assert stored["persona"] == "realty-desk-en"  # a catalogue id, as the page said


async def test_optional_fields_may_be_left_out(
    client: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    for phone in (None, "", "   "):
        body = {k: v for k, v in OTHER.items() if k not in ("phone", "page_language")}
        if phone is not None:
            body["phone"] = phone
        response = await client.post("/api/requests", json=body)
        assert response.status_code == 201, response.text
        stored = record(redis_client, response.json()["reference"])
        assert "phone" not in stored and "page_language" not in stored
        assert "persona" not in stored and "session_id" not in stored
    # An international domain and a message over several lines are kept as written.
    body = {**OTHER, "email": "agent@exemple-été.fr", "message": "Line one\r\nLine two\n\ttab"}
    response = await client.post("/api/requests", json=body)
    assert response.status_code == 201, response.text
    stored = record(redis_client, response.json()["reference"])
    assert stored["email"] == "agent@exemple-été.fr"
    assert stored["message"] == "Line one\nLine two\n\ttab"


# --- every field's problem, in the page's language -----------------------------------------

LONG = "x" * 2001
FIELD_CASES: list[tuple[str, dict[str, Any], str, str, dict[str, Any]]] = [
    ("name missing", {"name": None}, "name", "required", {}),
    ("name too short", {"name": "J"}, "name", "too_short", {"min": 2}),
    ("name too long", {"name": "J" * 101}, "name", "too_long", {"max": 100}),
    ("name over two lines", {"name": "Jean\nDupont"}, "name", "invalid_characters", {}),
    ("name a number", {"name": 42}, "name", "not_text", {}),
    ("email without domain", {"email": "jeanne@"}, "email", "invalid_email", {}),
    ("email with a space", {"email": "jeanne dupont@agence.fr"}, "email", "invalid_email", {}),
    ("email one-letter tld", {"email": "jeanne@agence.f"}, "email", "invalid_email", {}),
    ("email two ats", {"email": "a@b@agence.fr"}, "email", "invalid_email", {}),
    ("email header injection", {"email": "a@agence.fr\r\nBcc: x@evil.test"}, "email",
     "invalid_characters", {}),
    ("email too long", {"email": "a" * 250 + "@x.fr"}, "email", "too_long", {"max": 254}),
    ("phone too few digits", {"phone": "12-34"}, "phone", "invalid_phone", {}),
    ("phone too many digits", {"phone": "+33 6 12 34 56 78 90 12 34"}, "phone",
     "invalid_phone", {}),
    ("phone with words", {"phone": "06 12 34 56 78 ext"}, "phone", "invalid_phone", {}),
    ("company empty", {"company": "  "}, "company", "required", {}),
    ("message too long", {"message": LONG}, "message", "too_long", {"max": 2000}),
    ("message control char", {"message": "hi\x00there"}, "message", "invalid_characters", {}),
    ("language missing", {"language": None}, "language", "required", {}),
    ("language German", {"language": "de"}, "language", "not_allowed",
     {"allowed": ["fr", "en"]}),
    ("page language Spanish", {"page_language": "es"}, "page_language", "not_allowed",
     {"allowed": ["fr", "en"]}),
    ("unknown persona", {"persona": "nope-persona"}, "persona", "unknown_persona", {}),
    ("session id malformed", {"session_id": "../../etc"}, "session_id", "invalid_session", {}),
    ("a field the policy does not name", {"consent": True}, "consent", "unknown_field", {}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "field", "key", "params"),
    [case[1:] for case in FIELD_CASES],
    ids=[case[0] for case in FIELD_CASES],
)
async def test_each_problem_is_named_by_field_and_key_and_changes_nothing(
    client: httpx.AsyncClient,
    redis_client: redis.Redis,
    changes: dict[str, Any],
    field: str,
    key: str,
    params: dict[str, Any],
) -> None:
    assert (await client.post("/api/requests", json=OTHER)).status_code == 201
    before = snapshot(redis_client)
    body = {**FORM, **changes}
    response = await client.post("/api/requests", json=body)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["error"] == "invalid_request"
    assert answer["message"] == "Certains champs sont à corriger."  # the page is French
    assert set(answer["fields"]) == {field}
    problem = answer["fields"][field]
    assert problem["key"] == key
    assert {k: v for k, v in problem.items() if k not in ("key", "message")} == params
    assert problem["message"] and problem["message"] != key
    assert response.headers["cache-control"] == "no-store"
    assert snapshot(redis_client) == before


async def test_every_problem_at_once_in_english(
    client: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    before = snapshot(redis_client)
    body = {"name": "", "email": "nope", "phone": "1", "company": "", "message": "",
            "language": "xx", "page_language": "en"}  # fmt: skip
    response = await client.post("/api/requests", json=body)
    assert response.status_code == 422
    answer = response.json()
    assert answer["message"] == "Some fields need your attention."
    assert {f: p["key"] for f, p in answer["fields"].items()} == {
        "name": "required", "email": "invalid_email", "phone": "invalid_phone",
        "company": "required", "message": "required", "language": "not_allowed",
    }  # fmt: skip
    assert answer["fields"]["name"]["message"] == "This field is required."
    assert snapshot(redis_client) == before


async def chunks(total: int) -> AsyncIterator[bytes]:
    """A body sent in pieces without a declared length (the client streams it)."""
    yield b'{"name": "'
    for _ in range(total // 1024):
        yield b"x" * 1024
    yield b'"}'


JSON = {"Content-Type": "application/json"}
TRANSPORT_CASES: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("truncated JSON", "POST", {"content": b'{"name": ', "headers": JSON}, 422, "invalid_json"),
    ("not UTF-8", "POST", {"content": b'{"name": "\xff"}', "headers": JSON}, 422,
     "invalid_json"),
    ("an array", "POST", {"json": [FORM]}, 422, "invalid_request"),
    ("a string", "POST", {"json": "hello"}, 422, "invalid_request"),
    ("text/plain", "POST", {"content": json.dumps(FORM).encode(),
                            "headers": {"Content-Type": "text/plain"}}, 415,
     "unsupported_media_type"),
    ("form encoded", "POST", {"data": FORM}, 415, "unsupported_media_type"),
    ("declared too large", "POST", {"json": {**FORM, "message": "x" * 17_000}}, 413,
     "body_too_large"),
    ("streamed too large", "POST", {"content": chunks(64 * 1024), "headers": JSON}, 413,
     "body_too_large"),
    ("another site's page", "POST", {"json": FORM, "headers": {"Origin": "https://evil.example"}},
     403, "origin_not_allowed"),
    ("a look-alike origin", "POST",
     {"json": FORM, "headers": {"Origin": ALLOWED_ORIGIN + ".evil.example"}}, 403,
     "origin_not_allowed"),
    ("GET", "GET", {}, 405, "method_not_allowed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "request_kwargs", "status", "code"),
    [case[1:] for case in TRANSPORT_CASES],
    ids=[case[0] for case in TRANSPORT_CASES],
)
async def test_bad_requests_are_refused_in_the_common_shape_and_change_nothing(
    client: httpx.AsyncClient,
    redis_client: redis.Redis,
    method: str,
    request_kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    assert (await client.post("/api/requests", json=OTHER)).status_code == 201
    before = snapshot(redis_client)
    response = await client.request(method, "/api/requests", **request_kwargs)
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["error"] == code and answer["message"]
    assert "reference" not in answer
    assert snapshot(redis_client) == before


async def test_cors_for_the_pages_origins_only(
    client: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}  # fmt: skip
    allowed = await client.options("/api/requests", headers={"Origin": ALLOWED_ORIGIN, **preflight})
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    refused = await client.options(
        "/api/requests", headers={"Origin": "https://evil.example", **preflight}
    )
    assert refused.status_code == 403
    posted = await client.post("/api/requests", json=FORM, headers={"Origin": ALLOWED_ORIGIN})
    assert posted.status_code == 201
    assert posted.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "Retry-After" in posted.headers["access-control-expose-headers"]


# --- the honeypot ------------------------------------------------------------------------


async def test_the_honeypot_pretends_and_stores_nothing(
    app: Any, client: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    assert (await client.post("/api/requests", json=OTHER)).status_code == 201
    before = snapshot(redis_client)
    caught = counted(app, "honeypot")
    for bait in ("https://cheap-pills.example", " x "):
        # Even with fields a person would be told to correct: a script learns nothing.
        for body in ({**FORM, "website": bait}, {**FORM, "email": "nope", "website": bait}):
            response = await client.post("/api/requests", json=body)
            assert response.status_code == 201, response.text
            assert set(response.json()) == {"reference"}
            assert REFERENCE.fullmatch(response.json()["reference"])
    assert snapshot(redis_client) == before
    assert counted(app, "honeypot") == caught + 4
    # Left empty (as people leave it), the request is taken.
    taken = await client.post("/api/requests", json={**FORM, "website": ""})
    assert taken.status_code == 201
    assert redis_client.exists(keys.request(taken.json()["reference"]))


# --- limits ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_app(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = write_request_policies(
        tmp_path_factory.mktemp("limited"), limits={"per_visitor_per_day": 2, "global_per_day": 3}
    )
    return make_app(redis_url, directory)


async def test_limits_per_visitor_and_for_everyone(
    limited_app: Any, redis_client: redis.Redis
) -> None:
    away_from_bucket_edge(redis_client, DAY_S, margin_s=30)
    async with (
        asgi_client(limited_app, peer="198.51.100.1") as first,
        asgi_client(limited_app, peer="198.51.100.2") as second,
        asgi_client(limited_app, peer="198.51.100.3") as third,
    ):
        for _ in range(2):
            assert (await first.post("/api/requests", json=FORM)).status_code == 201
        before = snapshot(redis_client)
        refused = await first.post("/api/requests", json=FORM)
        assert refused.status_code == 429
        answer = refused.json()
        assert answer == {
            "error": "rate_limited",
            "message": "Vous avez déjà envoyé 2 demandes aujourd'hui. Vous pourrez en "
            "envoyer une autre demain.",
            "reason": "visitor_daily",
        }
        retry = int(refused.headers["retry-after"])
        assert 0 < retry <= DAY_S
        assert snapshot(redis_client) == before  # a refusal writes nothing

        # Another visitor takes the last of the day's three.
        assert (await second.post("/api/requests", json=OTHER)).status_code == 201
        refused = await third.post("/api/requests", json=OTHER)
        assert refused.status_code == 429
        assert refused.json()["reason"] == "global_daily"
        assert refused.json()["message"] == (
            "We have received many requests today. Please try again tomorrow."
        )
        assert 0 < int(refused.headers["retry-after"]) <= DAY_S
    stored = [k for k in dump_redis(redis_client) if keys.kind_of(k.name.decode()) == keys.REQUEST]
    assert len(stored) == 3
    registry = limited_app.state.services.ops.metrics.registry
    sample = registry.get_sample_value("ocf_sales_requests_total", {"outcome": "rate_limited"})
    assert sample == 2


# --- Redis down --------------------------------------------------------------------------


async def test_redis_down_is_503_and_nothing_is_promised(
    own_redis: RedisServer, policies_dir: Path
) -> None:
    app = make_app(own_redis.url, policies_dir)
    async with asgi_client(app) as client:
        assert (await client.post("/api/requests", json=FORM)).status_code == 201
        own_redis.stop()
        started = time.monotonic()
        response = await client.post("/api/requests", json=OTHER)
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"
    assert "nothing was saved" in response.json()["message"]
    assert response.headers["retry-after"] == "5"
    assert time.monotonic() - started < 10
    assert re.search(r"reference", response.text) is None
