"""Sales and rights, by email: `python -m ops requests ...`, /ops/requests and the /ops page,
with the ops credential and the sales one. Each right checked key by key in Redis; bad
input changes nothing; every action in the audit log without the email; and a scan of
Redis at the end: the form only in its records, every key within its policy.

A real token server (with its background sender and a real SMTP server) and Redis; the
CLI in subprocesses; the requests made over HTTP from several addresses (through a
trusted proxy header).
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from policies import load_policies
from redisdb import keys
from sales.identity import email_hash
from tests.ops.support import (
    HASH_SECRET,
    OPS_TOKEN,
    auth,
    ops_json,
    request_token,
    run_ops,
    running_ops_stack,
)
from tests.sales.support import (
    FAST_NOTIFY,
    FORM,
    OTHER,
    SALES_TOKEN,
    SmtpSink,
    personal_values,
    write_request_policies,
)
from tests.server.support import dump_redis
from tests.support import wait_until

VISITOR_A, VISITOR_B = "203.0.113.41", "203.0.113.42"
NEW_EMAIL = "z.quaglia@quaglia-immo.example"
SALES = auth(SALES_TOKEN)
REQUEST_KINDS = {keys.REQUEST, keys.REQUESTS_BY_EMAIL, keys.REQUESTS_PENDING,
                 keys.REQUESTS_VISITOR_DAY, keys.REQUESTS_GLOBAL_DAY, keys.OPS_LOG}  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    policies = write_request_policies(tmp_path_factory.mktemp("policies"), notify=FAST_NOTIFY)
    sink = SmtpSink().start()
    try:
        with running_ops_stack(policies, SALES_TOKEN=SALES_TOKEN, **sink.env()) as (
            server,
            redis_server,
            env,
        ):
            base = server.base_url
            minted = request_token(base, VISITOR_A)
            assert minted.status_code == 201, minted.text
            session_id = minted.json()["session_id"]
            references = [
                post_request(base, VISITOR_A, {**FORM, "session_id": session_id}),
                post_request(base, VISITOR_A, {**FORM, "email": FORM["email"].upper(),
                                               "message": "Second message, same person."}),
                post_request(base, VISITOR_B, OTHER),
            ]  # fmt: skip
            wait_until(lambda: len(sink.handler.messages) == 3, 60)
            yield {
                "base": base,
                "env": env,
                "redis": redis_server.client(),
                "session_id": session_id,
                "refs": references,
                "sink": sink,
            }
    finally:
        sink.stop()


def post_request(base: str, address: str, body: dict[str, str]) -> str:
    response = httpx.post(
        base + "/api/requests", json=body, headers={"X-Forwarded-For": address}, timeout=15
    )
    assert response.status_code == 201, response.text
    return str(response.json()["reference"])


def record(client: redis.Redis, reference: str) -> dict[str, str]:
    raw: Any = client.hgetall(keys.request(reference))
    return {k.decode(): v.decode() for k, v in raw.items()}


def request_keys(client: redis.Redis) -> set[tuple[bytes, str, tuple[bytes, ...]]]:
    """The keys requests live in (and the audit log), byte for byte."""
    return {
        (k.name, k.kind, k.contents)
        for k in dump_redis(client)
        if keys.kind_of(k.name.decode()) in REQUEST_KINDS
    }


def cli(env: dict[str, str], *args: str, stdin: str = "") -> Any:
    done = run_ops(env, "requests", *args, "--json", stdin=stdin)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# --- reading ------------------------------------------------------------------------------


def test_sales_list_and_read_requests(stack: dict[str, Any]) -> None:
    env, r = stack["env"], stack["redis"]
    first, second, third = stack["refs"]
    listed = cli(env, "list")
    assert listed["count"] == 3
    assert [row["reference"] for row in listed["requests"]] == [third, second, first]
    row = listed["requests"][2]
    assert (row["name"], row["email"], row["company"]) == (
        FORM["name"], FORM["email"], FORM["company"]
    )  # fmt: skip
    assert row["notify_status"] == "sent" and row["status"] == "new"
    text = run_ops(env, "requests", "list")
    assert text.returncode == 0 and "reference" in text.stdout and first in text.stdout

    # By email, whatever its case, from standard input: both of that person's requests.
    shown = cli(env, "show", "--email", "-", stdin=FORM["email"].lower() + "\n")
    assert [s["reference"] for s in shown["requests"]] == [first, second]
    full = shown["requests"][0]
    assert full["session_id"] == stack["session_id"] and full["persona"] == "agence-immo-fr"
    assert full["notify_status"] == "sent" and full["notify_attempts"] == 1
    assert full["notify_message_id"] == f"<{first}.sales-request@onecallflow.test>"
    assert full["ttl_s"] > 364 * 86_400
    assert cli(env, "show", first.lower())["requests"][0]["reference"] == first

    # The API with the sales credential answers what the CLI prints.
    over_http = httpx.get(stack["base"] + "/ops/requests", headers=SALES, timeout=15)
    assert over_http.status_code == 200, over_http.text

    def steady(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k != "expires_at"} for row in rows]

    assert steady(over_http.json()["requests"]) == steady(listed["requests"])
    by_email = httpx.post(
        stack["base"] + "/ops/requests/show", json={"email": FORM["email"]}, headers=SALES,
        timeout=15,
    )  # fmt: skip
    assert [s["reference"] for s in by_email.json()["requests"]] == [first, second]
    one = httpx.get(f"{stack['base']}/ops/requests/{third}", headers=auth(), timeout=15)
    assert one.json()["requests"][0]["email"] == OTHER["email"]
    assert r.exists(keys.request(third))


def test_the_sales_credential_opens_requests_and_nothing_else(stack: dict[str, Any]) -> None:
    base, r = stack["base"], stack["redis"]
    for method, path, body in [
        ("GET", "/ops/sessions", None), ("GET", "/ops/top", None), ("GET", "/ops/blocks", None),
        ("POST", "/ops/blocks", {"visitor": "0" * 32, "reason": "x"}),
        ("POST", "/ops/lookup", {"ip": VISITOR_A}), ("POST", "/ops/erase", {"ip": VISITOR_A}),
        ("GET", "/ops/audit-log", None), ("GET", "/metrics", None),
    ]:  # fmt: skip
        refused = httpx.request(method, base + path, json=body, headers=SALES, timeout=15)
        assert refused.status_code == 401, (path, refused.text)
    exported = httpx.post(
        base + "/ops/requests/export", json={"email": FORM["email"], "ip": VISITOR_A},
        headers=SALES, timeout=15,
    )  # fmt: skip
    assert exported.status_code == 403 and exported.json()["error"] == "forbidden"
    assert httpx.get(base + "/ops/requests", timeout=15).status_code == 401
    wrong = httpx.get(base + "/ops/requests", headers=auth("not-a-token"), timeout=15)
    assert wrong.status_code == 401

    # The page: the sales token sees the requests and nothing about visitors.
    page = httpx.post(base + "/ops", data={"token": SALES_TOKEN}, timeout=15)
    assert page.status_code == 200
    assert "Sales requests" in page.text and FORM["company"] in page.text
    assert "Top visitors" not in page.text and "Blocks" not in page.text
    assert "<script" not in page.text and "set-cookie" not in page.headers
    blocked = httpx.post(
        base + "/ops", data={"token": SALES_TOKEN, "action": "block", "visitor": "0" * 32},
        timeout=15,
    )  # fmt: skip
    assert blocked.status_code == 403
    assert not list(r.scan_iter(match=keys.pattern(keys.BLOCK)))
    ops_page = httpx.post(base + "/ops", data={"token": OPS_TOKEN}, timeout=15)
    assert "Top visitors" in ops_page.text and "Sales requests" in ops_page.text


# --- contact and rights ---------------------------------------------------------------------


def test_a_contact_moves_the_retention(stack: dict[str, Any]) -> None:
    env, r = stack["env"], stack["redis"]
    third = stack["refs"][2]
    r.expire(keys.request(third), 1000)  # as if eleven months had gone by
    done = cli(env, "contacted", third)
    assert done["contacted"] == [third]
    ttl_s = load_policies().retention.sales_requests_ttl_s
    assert ttl_s - 60 < r.ttl(keys.request(third)) <= ttl_s
    stored = record(r, third)
    assert stored["status"] == "contacted" and stored["contacts"] == "1"
    index = keys.requests_by_email(email_hash(HASH_SECRET, OTHER["email"]))
    assert r.ttl(index) >= r.ttl(keys.request(third)) - 5
    # Over the API too, by the sales credential: a second contact.
    again = httpx.post(
        stack["base"] + "/ops/requests/contacted", json={"reference": third}, headers=SALES,
        timeout=15,
    )  # fmt: skip
    assert again.status_code == 200 and record(r, third)["contacts"] == "2"


BAD_CLI = [
    ("unknown reference", ["rectify", "AAAA-BBBB-CCCC", "--name", "New Name"], "no request"),
    ("not a reference", ["contacted", "hello"], "not a request reference"),
    ("bad new email", ["rectify", "--email", FORM["email"], "--new-email", "nope"],
     "email: This email address"),
    ("name on two lines", ["rectify", "--email", FORM["email"], "--name", "A\nB"],
     "name: This field holds"),
    ("nothing to rectify", ["rectify", "--email", FORM["email"]], "nothing to rectify"),
    ("both reference and email", ["show", "AAAA-BBBB-CCCC", "--email", FORM["email"]],
     "not both"),
    ("neither", ["erase"], "name one request"),
    ("not an email", ["erase", "--email", "nobody"], "email: "),
    ("no email on stdin", ["export", "--email", "-"], "no email on standard input"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "says"), [c[1:] for c in BAD_CLI], ids=[c[0] for c in BAD_CLI])
def test_bad_input_changes_nothing(stack: dict[str, Any], args: list[str], says: str) -> None:
    r = stack["redis"]
    before = request_keys(r)
    done = run_ops(stack["env"], "requests", *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert says in done.stderr
    assert request_keys(r) == before


def test_bad_api_input_changes_nothing(stack: dict[str, Any]) -> None:
    base, r = stack["base"], stack["redis"]
    first = stack["refs"][0]
    before = request_keys(r)
    for path, body, status, code in [
        ("/ops/requests/rectify", {"reference": first, "fields": {"vip": "yes"}}, 422,
         "invalid_request"),
        ("/ops/requests/rectify", {"reference": first, "fields": {"email": "x"}}, 422,
         "invalid_request"),
        ("/ops/requests/rectify", {"reference": first, "fields": "name"}, 422, "invalid_request"),
        ("/ops/requests/erase", {"reference": "AAAA-BBBB-CCCC"}, 404, "unknown_request"),
        ("/ops/requests/erase", {"reference": first, "extra": 1}, 422, "invalid_request"),
        ("/ops/requests/restrict", {"reference": first, "lift": "yes"}, 422, "invalid_request"),
    ]:  # fmt: skip
        answer = httpx.post(base + path, json=body, headers=SALES, timeout=15)
        assert answer.status_code == status, (path, body, answer.text)
        assert answer.json()["error"] == code
    assert request_keys(r) == before


def test_rectify_moves_the_request_to_its_new_email(stack: dict[str, Any]) -> None:
    env, r = stack["env"], stack["redis"]
    first, second, _ = stack["refs"]
    old_index = keys.requests_by_email(email_hash(HASH_SECRET, FORM["email"]))
    new_index = keys.requests_by_email(email_hash(HASH_SECRET, NEW_EMAIL))
    assert r.smembers(old_index) == {first.encode(), second.encode()}
    done = cli(
        env, "rectify", "--email", "-", "--new-email", "-", "--name", "Zéphyrine Quaglia",
        stdin=f"{FORM['email']}\n{NEW_EMAIL}\n",
    )  # fmt: skip
    assert sorted(done["rectified"]) == sorted([first, second])
    assert done["fields"] == ["email", "name"]
    assert not r.exists(old_index)
    assert r.smembers(new_index) == {first.encode(), second.encode()}
    for reference in (first, second):
        stored = record(r, reference)
        assert stored["email"] == NEW_EMAIL and stored["name"] == "Zéphyrine Quaglia"
        assert stored["email_hash"] == email_hash(HASH_SECRET, NEW_EMAIL)
        assert stored["rectified_fields"] == "email,name"
        assert r.ttl(new_index) >= r.ttl(keys.request(reference)) - 5
    # The phone removed over the API (the sales credential).
    removed = httpx.post(
        stack["base"] + "/ops/requests/rectify",
        json={"reference": first, "fields": {"phone": ""}}, headers=SALES, timeout=15,
    )  # fmt: skip
    assert removed.status_code == 200, removed.text
    assert "phone" not in record(r, first)
    assert cli(env, "show", "--email", FORM["email"])["requests"] == []


def test_restriction_stops_processing_until_lifted(stack: dict[str, Any]) -> None:
    env, r, base = stack["env"], stack["redis"], stack["base"]
    third = stack["refs"][2]
    done = cli(env, "restrict", third)
    assert done["restricted"] == [third] and "no mail to sales" in done["meaning"]
    assert record(r, third)["restricted"] == "1"
    row = next(x for x in cli(env, "list")["requests"] if x["reference"] == third)
    assert row["status"] == "restricted"
    assert all(row[f] is None for f in ("name", "email", "phone", "company", "message"))
    page = httpx.post(base + "/ops", data={"token": SALES_TOKEN}, timeout=15)
    assert OTHER["company"] not in page.text and "restricted: contents hidden" in page.text
    before = request_keys(r)
    refused = run_ops(env, "requests", "contacted", third)
    assert refused.returncode == 2 and "is restricted" in refused.stderr
    over_http = httpx.post(
        base + "/ops/requests/contacted", json={"reference": third}, headers=SALES, timeout=15
    )
    assert over_http.status_code == 409 and over_http.json()["error"] == "restricted"
    # Nothing changed but the two refusals' audit entries.
    after = request_keys(r)
    assert {k for k in after - before if keys.kind_of(k[0].decode()) != keys.OPS_LOG} == set()
    assert before <= after
    # Still shown in full to whoever serves the person's rights.
    assert cli(env, "show", third)["requests"][0]["email"] == OTHER["email"]
    lifted = httpx.post(
        base + "/ops/requests/restrict", json={"reference": third, "lift": True}, headers=SALES,
        timeout=15,
    )  # fmt: skip
    assert lifted.json() == {"lifted": [third]}
    assert "restricted" not in record(r, third)


def test_export_gives_everything_held_about_an_email(stack: dict[str, Any]) -> None:
    env = stack["env"]
    first, second, _ = stack["refs"]
    exported = run_ops(env, "requests", "export", "--email", "-", "--ip", "-",
                       stdin=f"{NEW_EMAIL}\n{VISITOR_A}\n")  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    data = json.loads(exported.stdout)  # JSON without --json: it is the portable copy
    assert data["email_hash"] == email_hash(HASH_SECRET, NEW_EMAIL)
    assert [q["reference"] for q in data["requests"]] == [first, second]
    for request in data["requests"]:
        assert request["email"] == NEW_EMAIL
        assert request["notify_status"] == "sent" and request["notify_sent_at"]
    sessions = data["demo_sessions"]["sessions"]
    assert [s["session_id"] for s in sessions] == [stack["session_id"]]
    assert VISITOR_A not in json.dumps(data["requests"])
    # Over the API, with the ops credential, the same.
    over_http = httpx.post(
        stack["base"] + "/ops/requests/export", json={"email": NEW_EMAIL, "ip": VISITOR_A},
        headers=auth(), timeout=15,
    )  # fmt: skip
    assert over_http.status_code == 200
    for theirs, ours in zip(over_http.json()["requests"], data["requests"], strict=True):
        assert {k: v for k, v in theirs.items() if k not in ("expires_at", "ttl_s")} == {
            k: v for k, v in ours.items() if k not in ("expires_at", "ttl_s")
        }


def test_erase_leaves_nothing_of_the_email(stack: dict[str, Any]) -> None:
    env, r = stack["env"], stack["redis"]
    first, second, third = stack["refs"]
    untouched = record(r, third)
    done = cli(env, "erase", "--email", "-", stdin=NEW_EMAIL + "\n")
    assert sorted(done["erased"]) == sorted([first, second])
    assert done["remaining"] == {"records": 0, "index_entries": 0, "queued": 0}
    for reference in (first, second):
        assert not r.exists(keys.request(reference))
        assert r.zscore(keys.requests_pending(), reference) is None
    for address in (FORM["email"], NEW_EMAIL):
        assert not r.exists(keys.requests_by_email(email_hash(HASH_SECRET, address)))
    for key in dump_redis(r):
        for reference in (first, second):
            if keys.kind_of(key.name.decode()) != keys.OPS_LOG:
                assert reference.encode() not in key.blob(), key.name
    assert cli(env, "show", "--email", NEW_EMAIL)["requests"] == []
    assert record(r, third) == untouched
    # The sales credential may erase a request (not a visitor's sessions).
    gone = httpx.post(
        stack["base"] + "/ops/requests/erase", json={"reference": third}, headers=SALES,
        timeout=15,
    )  # fmt: skip
    assert gone.status_code == 200 and gone.json()["erased"] == [third]
    assert not r.exists(keys.request(third))


# --- accountability and the scan of Redis ------------------------------------------------------


def test_every_action_is_audited_without_the_email(stack: dict[str, Any]) -> None:
    env = stack["env"]
    entries = ops_json(env, "audit-log", "--since", "1d", "--limit", "1000")["entries"]
    seen = {(e["action"], e["credential"]) for e in entries if e["action"].startswith("request")}
    user = f"cli:{getpass.getuser()}"
    assert {
        ("requests_list", user), ("requests_list", "SALES_TOKEN"), ("requests_list", "OPS_TOKEN"),
        ("request_show", user), ("request_show", "SALES_TOKEN"), ("request_show", "OPS_TOKEN"),
        ("request_contacted", user), ("request_contacted", "SALES_TOKEN"),
        ("request_rectify", user), ("request_rectify", "SALES_TOKEN"),
        ("request_restrict", user), ("request_restrict", "SALES_TOKEN"),
        ("request_export", user), ("request_export", "OPS_TOKEN"),
        ("request_erase", user), ("request_erase", "SALES_TOKEN"),
    } <= seen  # fmt: skip
    rectify = next(e for e in entries if e["action"] == "request_rectify" and e["via"] == "cli")
    assert rectify["detail"]["fields"] == ["email", "name"]
    assert rectify["detail"]["email_hash"] == email_hash(HASH_SECRET, FORM["email"])
    text = json.dumps(entries, ensure_ascii=False)
    for value in [*personal_values(FORM), *personal_values(OTHER), NEW_EMAIL.encode()]:
        assert value.decode() not in text, value
    assert "Zéphyrine" not in text and "Quaglia" not in text


def test_redis_holds_the_form_only_in_its_records_and_every_key_within_policy(
    stack: dict[str, Any],
) -> None:
    r = stack["redis"]
    fresh = post_request(stack["base"], VISITOR_B, {**FORM, "email": NEW_EMAIL})
    wait_until(lambda: record(r, fresh).get("notify_status") == "sent", 60)
    stored = dump_redis(r)
    assert {keys.REQUEST, keys.REQUESTS_BY_EMAIL, keys.OPS_LOG} <= {
        keys.kind_of(k.name.decode()) for k in stored
    }
    values = [*personal_values(FORM), *personal_values(OTHER), NEW_EMAIL.encode(),
              FORM["company"].encode(), OTHER["company"].encode()]  # fmt: skip
    for key in stored:
        if keys.kind_of(key.name.decode()) == keys.REQUEST:
            continue
        for value in values:
            assert value not in key.blob(), (key.name, value)
        assert VISITOR_A.encode() not in key.blob() and VISITOR_B.encode() not in key.blob()
    report = ops_json(stack["env"], "audit")
    assert report["ok"], report["breaches"]
    assert report["kinds"][keys.REQUEST]["policy_max_s"] == 365 * 86_400
    for kind in (keys.REQUEST, keys.REQUESTS_BY_EMAIL, keys.REQUESTS_VISITOR_DAY,
                 keys.REQUESTS_GLOBAL_DAY):  # fmt: skip
        assert 0 < report["kinds"][kind]["max_ttl_s"] <= report["kinds"][kind]["policy_max_s"]
