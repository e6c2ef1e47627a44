"""The mail to sales, through a real SMTP server on loopback (aiosmtpd): saved first, then
sent; refused (4xx, 5xx, a closed port), retried with backoff, and in the end delivered
exactly once, by whichever process; the delivery metadata on the record and nothing else;
never sent once restricted or erased; never in clear when STARTTLS is required; and the
settings refused at start-up when half there.

Most tests drive the real sender (`Notifier.send_due`) of an in-process app; the last one
runs real `python token_server.py` processes, its background task, a kill and a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from ops.audit_log import Actor
from redisdb import keys
from sales.mail import smtp_config
from sales.notifier import Notifier
from sales.store import NOTIFY_FIELDS, RECORD_FIELDS
from server.settings import ConfigError, Settings
from tests.sales.support import (
    FAST_NOTIFY,
    FORM,
    OTHER,
    SALES_EMAIL,
    SMTP_FROM,
    SmtpSink,
    write_request_policies,
)
from tests.server.support import asgi_client, dump_redis, make_app, settings_env
from tests.support import ServerProcess, wait_until


@pytest.fixture(scope="module")
def policies_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_request_policies(
        tmp_path_factory.mktemp("policies"),
        limits={"per_visitor_per_day": 50, "global_per_day": 100},
        notify=FAST_NOTIFY,
    )


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    yield sink
    sink.stop()


def mail_app(
    redis_url: str, policies_dir: Path, sink: SmtpSink, scheme: str = "smtp", login: str = ""
) -> Any:
    return make_app(
        redis_url,
        policies_dir,
        smtp_url=f"{scheme}://{login}127.0.0.1:{sink.port}",
        sales_email=[SALES_EMAIL],
        smtp_from=SMTP_FROM,
    )


def notifier_of(app: Any) -> Notifier:
    notifier = app.state.services.notifier
    assert isinstance(notifier, Notifier)
    return notifier


def record(client: redis.Redis, reference: str) -> dict[str, str]:
    raw: Any = client.hgetall(keys.request(reference))
    return {k.decode(): v.decode() for k, v in raw.items()}


async def submit(app: Any, body: dict[str, str] | None = None) -> str:
    async with asgi_client(app) as client:
        response = await client.post("/api/requests", json=body or FORM)
    assert response.status_code == 201, response.text
    return str(response.json()["reference"])


async def send_until_delivered(
    notifier: Notifier, sink: SmtpSink, client: redis.Redis, reference: str, timeout: float = 60
) -> None:
    """Run the sender whenever the mail is due again, until the relay has it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await notifier.send_due()
        if record(client, reference).get("notify_status") == "sent":
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not delivered: {record(client, reference)}")


def assert_the_one_mail(message: Message, reference: str, stored: dict[str, str]) -> None:
    assert message["From"] == SMTP_FROM
    assert message["To"] == SALES_EMAIL
    assert message["Reply-To"] == FORM["email"]
    assert message["Message-ID"] == stored["notify_message_id"]
    assert message["Message-ID"] == f"<{reference}.sales-request@onecallflow.test>"
    assert reference in str(message["Subject"]) and FORM["company"] in str(message["Subject"])
    raw = message.get_payload(decode=True)
    assert isinstance(raw, bytes)
    text = raw.decode().replace("\r\n", "\n")
    for name in ("name", "email", "phone", "company"):
        assert FORM[name] in text, name
    assert FORM["message"] in text


async def test_a_request_is_mailed_once_and_only_its_delivery_is_kept(
    redis_url: str, policies_dir: Path, sink: SmtpSink, redis_client: redis.Redis
) -> None:
    sink.start(auth=True)
    # User and password URL-encoded in SMTP_URL: "bot", "p@ss word".
    app = mail_app(redis_url, policies_dir, sink, login="bot:p%40ss%20word@")
    reference = await submit(app)
    # Saved first: the record and its place in the queue exist before any mail.
    queued = record(redis_client, reference)
    assert queued["notify_status"] == "pending" and queued["notify_attempts"] == "0"
    assert redis_client.zscore(keys.requests_pending(), reference) is not None
    assert sink.handler.messages == []

    assert await notifier_of(app).send_due() == 1
    assert await notifier_of(app).send_due() == 0  # nothing more due
    assert len(sink.handler.messages) == 1
    stored = record(redis_client, reference)
    assert_the_one_mail(sink.handler.messages[0], reference, stored)
    assert sink.handler.envelopes == [(SMTP_FROM, [SALES_EMAIL])]
    assert sink.handler.logins == [(b"bot", b"p@ss word")]  # the URL's user and password

    assert stored["notify_status"] == "sent"
    assert stored["notify_attempts"] == "1"
    assert abs(float(stored["notify_sent_at"]) - time.time()) < 60
    assert set(stored) <= RECORD_FIELDS
    # Delivery metadata and nothing else about the mail (no subject, body or address).
    assert {f for f in stored if f.startswith("notify_")} == {
        "notify_status", "notify_attempts", "notify_last_attempt_at", "notify_sent_at",
        "notify_message_id",
    }  # fmt: skip
    assert not redis_client.exists(keys.requests_pending())
    registry = app.state.services.ops.metrics.registry
    assert registry.get_sample_value("ocf_sales_notifications_total", {"outcome": "sent"}) == 1


REFUSALS = [
    ("451 at DATA, twice", {"refuse_data": ["451 4.3.0 Try again later"] * 2}, "smtp_451"),
    ("550 at RCPT", {"refuse_rcpt": ["550 5.1.1 Mailbox unavailable"]}, "smtp_rcpt_550"),
    ("554 at DATA", {"refuse_data": ["554 5.7.1 Rejected"]}, "smtp_554"),
]


@pytest.mark.parametrize(
    ("refusals", "code"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
async def test_refused_then_accepted_arrives_once(
    redis_url: str,
    policies_dir: Path,
    sink: SmtpSink,
    redis_client: redis.Redis,
    refusals: dict[str, list[str]],
    code: str,
) -> None:
    for name, answers in refusals.items():
        setattr(sink.handler, name, list(answers))
    times = sum(len(a) for a in refusals.values())
    sink.start()
    app = mail_app(redis_url, policies_dir, sink)
    notifier = notifier_of(app)
    reference = await submit(app)

    assert await notifier.send_due() == 0
    failed = record(redis_client, reference)
    assert failed["notify_status"] == "failed"
    assert failed["notify_error"] == code  # a code, never the relay's words
    assert failed["notify_attempts"] == "1"
    wait = float(failed["notify_next_at"]) - float(failed["notify_last_attempt_at"])
    assert FAST_NOTIFY["first_retry_s"] - 0.01 <= wait <= FAST_NOTIFY["first_retry_s"] + 0.5
    assert await notifier.send_due() == 0  # not due yet: not tried again at once
    assert record(redis_client, reference)["notify_attempts"] == "1"

    await send_until_delivered(notifier, sink, redis_client, reference)
    await asyncio.sleep(FAST_NOTIFY["max_retry_s"])
    assert await notifier.send_due() == 0
    assert len(sink.handler.messages) == 1
    stored = record(redis_client, reference)
    assert stored["notify_attempts"] == str(times + 1)
    assert "notify_error" not in stored and "notify_next_at" not in stored
    assert_the_one_mail(sink.handler.messages[0], reference, stored)
    registry = app.state.services.ops.metrics.registry
    failures = registry.get_sample_value("ocf_sales_notifications_total", {"outcome": "failed"})
    assert failures == times


async def test_a_closed_port_then_a_listening_relay(
    redis_url: str, policies_dir: Path, sink: SmtpSink, redis_client: redis.Redis
) -> None:
    app = mail_app(redis_url, policies_dir, sink)  # nothing listens on the port yet
    notifier = notifier_of(app)
    reference = await submit(app)
    for _ in range(2):
        await notifier.send_due()
        await asyncio.sleep(FAST_NOTIFY["max_retry_s"] + 0.1)
    stored = record(redis_client, reference)
    assert stored["notify_status"] == "failed"
    assert stored["notify_error"] == "connection_refused"
    assert int(stored["notify_attempts"]) >= 2
    sink.start()
    await send_until_delivered(notifier, sink, redis_client, reference)
    assert len(sink.handler.messages) == 1


async def test_two_processes_send_one_mail(
    redis_url: str, policies_dir: Path, sink: SmtpSink, redis_client: redis.Redis
) -> None:
    sink.handler.data_delay_s = 1.0  # a slow relay: both senders are busy at once
    sink.start()
    first = mail_app(redis_url, policies_dir, sink)
    second = mail_app(redis_url, policies_dir, sink)
    references = [await submit(first), await submit(first, OTHER)]
    sent = await asyncio.gather(*(notifier_of(a).send_due() for a in (first, second, first)))
    assert sum(sent) == 2
    assert len(sink.handler.messages) == 2
    assert sorted(m["Message-ID"] for m in sink.handler.messages) == sorted(
        f"<{r}.sales-request@onecallflow.test>" for r in references
    )
    for reference in references:
        assert record(redis_client, reference)["notify_attempts"] == "1"


@pytest.mark.parametrize("action", ["restrict", "erase"])
async def test_a_request_restricted_or_erased_while_queued_is_never_sent(
    redis_url: str, policies_dir: Path, sink: SmtpSink, redis_client: redis.Redis, action: str
) -> None:
    from ops import sales_requests

    app = mail_app(redis_url, policies_dir, sink)
    notifier = notifier_of(app)
    reference = await submit(app)
    await notifier.send_due()  # the port is closed: failed, queued again
    assert record(redis_client, reference)["notify_status"] == "failed"
    ctx = app.state.services.ops.ctx
    actor = Actor("cli:test", "cli")
    if action == "restrict":
        await sales_requests.restrict(ctx, reference=reference, actor=actor)
    else:
        await sales_requests.erase(ctx, reference=reference, actor=actor)
    sink.start()
    await asyncio.sleep(FAST_NOTIFY["max_retry_s"] + 0.1)
    assert await notifier.send_due() == 0
    assert sink.handler.messages == []
    assert not redis_client.exists(keys.requests_pending())
    if action == "restrict":
        stored = record(redis_client, reference)
        assert stored["notify_status"] == "withheld" and stored["restricted"] == "1"
    else:
        # Nothing brought back by the sender: no record, no key without TTL.
        assert not redis_client.exists(keys.request(reference))
        assert all(k.ttl > 0 for k in dump_redis(redis_client))


async def test_starttls_required_never_sends_in_clear(
    redis_url: str, policies_dir: Path, sink: SmtpSink, redis_client: redis.Redis
) -> None:
    sink.start()  # offers no STARTTLS
    app = mail_app(redis_url, policies_dir, sink, scheme="smtp+starttls", login="bot:pw@")
    reference = await submit(app)
    assert await notifier_of(app).send_due() == 0
    stored = record(redis_client, reference)
    assert stored["notify_status"] == "failed" and stored["notify_error"] == "tls_unavailable"
    assert sink.handler.messages == [] and sink.handler.logins == []


async def test_without_smtp_settings_nothing_is_queued(
    redis_url: str, policies_dir: Path, redis_client: redis.Redis
) -> None:
    app = make_app(redis_url, policies_dir)
    assert app.state.services.notifier is None
    reference = await submit(app)
    assert not {f for f in record(redis_client, reference) if f in NOTIFY_FIELDS}
    assert not redis_client.exists(keys.requests_pending())


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"smtp_url": "smtp://127.0.0.1:25"}, "SALES_EMAIL, SMTP_FROM missing"),
        ({"sales_email": ["sales@x.test"], "smtp_from": "a@x.test"}, "SMTP_URL missing"),
        ({"smtp_url": "http://mail.x.test", "sales_email": ["s@x.test"], "smtp_from": "a@x.test"},
         "must start with smtps://"),
        ({"smtp_url": "smtps://mail.x.test", "sales_email": ["not an address"],
          "smtp_from": "a@x.test"}, "SALES_EMAIL"),
        ({"smtp_url": "smtp://mail.x.test", "sales_email": ["s@x.test"], "smtp_from": "a@x.test",
          "environment": "production"}, "in production use smtps://"),
    ],
)  # fmt: skip
def test_mail_settings_are_all_or_nothing_and_never_clear_text_in_production(
    values: dict[str, Any], says: str
) -> None:
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match=says.replace("(", r"\(")):
        smtp_config(settings, 30)


def test_the_smtp_url_schemes() -> None:
    def config(url: str) -> Any:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, smtp_url=url, sales_email=["a@x.test", "b@x.test"], smtp_from="d@x.test"
        )
        return smtp_config(settings, 30)

    tls = config("smtps://user%40x.test:s%3Acret@mail.x.test")
    assert (tls.security, tls.host, tls.port, tls.username, tls.password) == (
        "tls", "mail.x.test", 465, "user@x.test", "s:cret"
    )  # fmt: skip
    assert "s:cret" not in repr(tls)
    assert config("smtp+starttls://mail.x.test").port == 587
    assert config("smtp://127.0.0.1:2525").recipients == ("a@x.test", "b@x.test")
    assert smtp_config(Settings(_env_file=None), 30) is None  # type: ignore[call-arg]


# --- the token server's own sender ---------------------------------------------------------


def test_the_token_server_sends_in_the_background_and_a_restart_loses_nothing(
    redis_url: str, policies_dir: Path, sink: SmtpSink, redis_client: redis.Redis
) -> None:
    env = settings_env(redis_url, POLICIES_DIR=str(policies_dir), **sink.env())
    first = ServerProcess(env=env).start()
    try:
        response = httpx.post(first.base_url + "/api/requests", json=FORM, timeout=15)
        assert response.status_code == 201, response.text
        reference = response.json()["reference"]
        # Nothing listens on the relay's port: the server's sender fails and retries.
        wait_until(
            lambda: int(record(redis_client, reference).get("notify_attempts", "0")) >= 2, 30
        )
        assert first.proc is not None
        first.proc.kill()  # no goodbye: the queue in Redis is all that is left
        first.proc.wait(10)
    finally:
        first.stop()
    assert record(redis_client, reference)["notify_status"] == "failed"
    sink.start()
    # Two processes come up on the same Redis: one of them sends it, once.
    servers = [ServerProcess(env=env).start() for _ in range(2)]
    try:
        wait_until(lambda: len(sink.handler.messages) >= 1, 60)
        time.sleep(3 * FAST_NOTIFY["poll_s"] + FAST_NOTIFY["max_retry_s"])
        assert len(sink.handler.messages) == 1
        stored = record(redis_client, reference)
        assert stored["notify_status"] == "sent"
        assert_the_one_mail(sink.handler.messages[0], reference, stored)
        # A new request is sent at once by the server that took it.
        started = time.monotonic()
        again = httpx.post(servers[1].base_url + "/api/requests", json=OTHER, timeout=15)
        assert again.status_code == 201
        wait_until(lambda: len(sink.handler.messages) == 2, 30)
        assert time.monotonic() - started < 30
        logs = "".join(s.logs() for s in servers) + first.logs()
    finally:
        for server in servers:
            server.stop()
    # Nothing of the form in the servers' logs (the reference and a failure code may be).
    for value in (FORM["name"], FORM["email"], FORM["phone"], FORM["company"], "Quaglia"):
        assert value not in logs, value
    assert "connection_refused" in logs
