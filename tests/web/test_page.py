"""The demo page in real headless Chromium (Debian's), against the real token server and a
real Redis. LIVEKIT_URL points at a closed local port: everything up to joining the room is
real, and joining fails the way it does when a visitor's network blocks LiveKit."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio as aioredis
import yaml
from playwright.sync_api import Browser, Page, Playwright, Response, expect, sync_playwright

from agents_catalog import load_catalog
from agents_catalog.showcase import Showcase
from redisdb import keys
from tests.server.support import session_record
from tests.support import ROOT, ServerProcess, free_port, wait_until, write_policies
from tests.web.support import (
    Recorder,
    ensure_bundle,
    launch,
    minutes_words,
    origin,
    screenshot,
)

pytestmark = pytest.mark.browser

PRIVACY_URL = "https://privacy.example.test/policy"
# The page's own wording (web/src/strings.json), matched loosely so copy edits stay cheap.
UNREACHABLE = re.compile(r"could not connect to the voice server")
UNAVAILABLE_FR = re.compile(r"momentanément indisponible")
GIVE_BACK = "/api/token/release"


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    ensure_bundle()
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = launch(playwright)
    yield browser
    browser.close()


def start_server(redis_url: str, tmp: Path, limits: dict[str, object] | None = None):
    livekit_port = free_port()  # bound then released: nothing listens there
    env = {
        "REDIS_URL": redis_url,
        "LIVEKIT_URL": f"ws://127.0.0.1:{livekit_port}",
        "PRIVACY_POLICY_URL": PRIVACY_URL,
        "LOG_LEVEL": "WARNING",
    }
    if limits is not None:
        env["POLICIES_DIR"] = str(write_policies(tmp / "policies", limits=limits))
    return ServerProcess(env=env).start(), f"127.0.0.1:{livekit_port}"


@pytest.fixture(scope="module")
def server(redis_url: str, tmp_path_factory: pytest.TempPathFactory):
    process, livekit = start_server(redis_url, tmp_path_factory.mktemp("web"))
    yield process, livekit
    process.stop()


@pytest.fixture
def page(browser: Browser, redis_client: redis.Redis) -> Iterator[Page]:
    # redis_client flushed the database: every test starts as a new visitor.
    context = browser.new_context(locale="en-US", viewport={"width": 1000, "height": 900})
    page = context.new_page()
    yield page
    context.close()


def assert_nothing_stored(page: Page) -> None:
    """No cookie (from any response or script) and nothing in the browser's storage."""
    assert page.context.cookies() == []
    stored = page.evaluate(
        "() => ({cookie: document.cookie, local: localStorage.length,"
        " session: sessionStorage.length})"
    )
    assert stored == {"cookie": "", "local": 0, "session": 0}


def showcase_ids() -> list[str]:
    return [p.id for p in load_catalog().showcase()]


def card_ids(page: Page) -> list[str]:
    ids = page.locator("#agents .card").evaluate_all("cards => cards.map(c => c.dataset.agentId)")
    return [str(i) for i in ids]


def test_cards_render_in_showcase_order(server, page: Page) -> None:
    process, _ = server
    recorder = Recorder().attach(page)
    page.goto(process.base_url + "/")
    expect(page.locator("#agents .card")).to_have_count(len(showcase_ids()))
    assert card_ids(page) == showcase_ids()
    api = httpx.get(process.base_url + "/api/agents").json()["agents"]
    for agent, card in zip(api, page.locator("#agents .card").all(), strict=True):
        expect(card.locator("h3")).to_have_text(agent["display_name"])
        expect(card.locator(".pitch")).to_have_text(agent["pitch"])
        expect(card.locator(".tags li")).to_have_text(agent["tags"])
        language = {"fr": "Speaks French", "en": "Speaks English"}[agent["language"]]
        expect(card.locator(".badge")).to_have_text(language)
    # Nothing chosen yet: no call panel, and the privacy notice links the configured policy.
    expect(page.locator("#call")).to_be_hidden()
    expect(page.locator("#privacy-link")).to_have_attribute("href", PRIVACY_URL)
    screenshot(page, "persona-list.png")
    recorder.assert_clean()
    recorder.assert_origins(origin(process.base_url))
    assert_nothing_stored(page)


def test_deep_link_preselects_the_persona(server, page: Page) -> None:
    process, _ = server
    wanted = showcase_ids()[1]
    name = load_catalog().personas[wanted].display_name
    page.goto(f"{process.base_url}/?agent={wanted}")
    expect(page.locator("#call")).to_be_visible()
    expect(page.locator("#call-heading")).to_have_text(f"Your call with {name}")
    expect(page.locator(f'.card[data-agent-id="{wanted}"]')).to_have_attribute(
        "aria-current", "true"
    )
    # Ready to call: the Start button has the focus, so Enter starts the call.
    expect(page.locator("#start")).to_be_focused()
    expect(page.locator("#start")).to_have_text("Start call")
    expect(page.locator("#notice")).to_be_hidden()


def test_unknown_agent_link_says_so_and_shows_the_list(server, page: Page) -> None:
    process, _ = server
    page.goto(f"{process.base_url}/?agent=no-such-agent")
    expect(page.locator("#notice")).to_contain_text("no-such-agent")
    expect(page.locator("#notice")).to_contain_text("does not exist")
    expect(page.locator("#agents .card")).to_have_count(len(showcase_ids()))
    expect(page.locator("#call")).to_be_hidden()
    # The bad id is dropped from the address so a reload or a shared link is clean.
    assert "agent=" not in page.url


def test_keyboard_only_choose_and_start(server, page: Page) -> None:
    process, _ = server
    page.goto(process.base_url + "/")
    expect(page.locator("#agents .card")).to_have_count(len(showcase_ids()))
    first = showcase_ids()[0]
    button = page.locator(f'.card[data-agent-id="{first}"] button')
    for _ in range(12):  # Tab through the language switch to the first card's button
        page.keyboard.press("Tab")
        if button.evaluate("b => b === document.activeElement"):
            break
    expect(button).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#start")).to_be_focused()
    assert f"agent={first}" in page.url


def test_start_call_gets_a_token_then_reports_livekit_unreachable(server, page: Page) -> None:
    process, livekit = server
    recorder = Recorder().attach(page)
    agent = showcase_ids()[0]
    page.goto(f"{process.base_url}/?agent={agent}")
    expect(page.locator("#start")).to_be_focused()
    with page.expect_response(lambda r: r.url.endswith("/api/token")) as token:
        page.locator("#start").click()
    assert token.value.status == 201
    assert token.value.request.post_data_json == {"agent": agent}
    notice = page.locator("#notice")
    expect(notice).to_contain_text(UNREACHABLE, timeout=45_000)
    expect(page.locator("#start")).to_have_text("Call again")
    expect(page.locator("#start")).to_be_enabled()
    expect(page.locator("#end")).to_be_hidden()
    screenshot(page, "livekit-unreachable.png")
    # The page did try LiveKit, at LIVEKIT_URL and nowhere else.
    assert any(origin(r.url) == livekit for r in recorder.requests)
    recorder.assert_origins(origin(process.base_url), livekit)
    recorder.assert_clean()
    assert_nothing_stored(page)
    # Nothing of the call is left in the page (no agent audio element).
    assert page.locator("audio").count() == 0


@pytest.mark.parametrize(
    ("limits", "status", "wording"),
    [
        (
            {"visitor": {"sessions_per_hour": 1, "concurrent_sessions": 5, "unjoined_tokens": 5}},
            429,
            # The token server names the limit (reason: visitor_hourly): the page says which.
            "You have reached the number of demo calls allowed per hour."
            " Please try again in {wait}.",
        ),
        (
            {
                "visitor": {"concurrent_sessions": 5, "unjoined_tokens": 5},
                "global": {"concurrent_sessions": 1},
            },
            503,
            "All demo lines are busy right now. Please try again in {wait}.",
        ),
    ],
    ids=["rate_limited", "capacity"],
)
def test_refusal_shows_when_to_try_again(
    redis_url, redis_client, browser: Browser, tmp_path: Path, limits, status, wording
) -> None:
    process, _ = start_server(redis_url, tmp_path, limits)
    context = browser.new_context(locale="en-GB")
    try:
        agent = showcase_ids()[0]
        # The visitor's one allowed call (same address as the browser: 127.0.0.1).
        first = httpx.post(process.base_url + "/api/token", json={"agent": agent})
        assert first.status_code == 201
        page = context.new_page()
        recorder = Recorder().attach(page)
        page.goto(f"{process.base_url}/?agent={agent}")
        with page.expect_response(lambda r: r.url.endswith("/api/token")) as token:
            page.locator("#start").click()
        assert token.value.status == status
        retry_after = int(token.value.headers["retry-after"])
        expected = wording.format(wait=minutes_words(retry_after))
        expect(page.locator("#notice")).to_have_text(expected)
        expect(page.locator("#start")).to_be_focused()
        if status == 429:
            screenshot(page, "rate-limited.png")
        recorder.assert_clean()
    finally:
        context.close()
        process.stop()


def test_microphone_denied_explains_and_requests_no_token(
    server, playwright: Playwright, redis_client
) -> None:
    process, _ = server
    browser = launch(playwright, fake_mic_ui=False)
    try:
        # No permission granted and no prompt to click: Chromium denies the microphone.
        context = browser.new_context(locale="en-US", permissions=[])
        page = context.new_page()
        recorder = Recorder().attach(page)
        page.goto(f"{process.base_url}/?agent={showcase_ids()[0]}")
        page.locator("#start").click()
        expect(page.locator("#notice")).to_contain_text("The microphone is blocked")
        expect(page.locator("#start")).to_be_enabled()
        assert recorder.urls("/api/token") == []
        # Nothing admitted, nothing recorded: no session record exists.
        assert redis_client.keys(keys.pattern(keys.SESSION)) == []
        recorder.assert_clean()
        screenshot(page, "microphone-denied.png")
    finally:
        browser.close()


def test_french_from_browser_language_and_switch(server, browser: Browser, redis_client) -> None:
    process, _ = server
    context = browser.new_context(locale="fr-FR")
    try:
        page = context.new_page()
        recorder = Recorder().attach(page)
        page.goto(f"{process.base_url}/?agent={showcase_ids()[0]}")
        expect(page.locator("html")).to_have_attribute("lang", "fr")
        expect(page.locator("h1")).to_have_text("Parlez à un agent vocal OneCallFlow")
        expect(page.locator("#start")).to_have_text("Démarrer l'appel")
        expect(page.locator('[data-lang="fr"]')).to_have_attribute("aria-pressed", "true")
        page.locator('[data-lang="en"]').click()
        expect(page.locator("html")).to_have_attribute("lang", "en")
        expect(page.locator("#start")).to_have_text("Start call")
        assert "lang=en" in page.url
        recorder.assert_clean()
    finally:
        context.close()


def test_server_refusal_in_french_when_redis_is_down(
    own_redis, browser: Browser, tmp_path: Path
) -> None:
    process, _ = start_server(own_redis.url, tmp_path)
    context = browser.new_context(locale="fr-FR")
    try:
        page = context.new_page()
        recorder = Recorder().attach(page)
        page.goto(f"{process.base_url}/?agent={showcase_ids()[0]}")
        expect(page.locator("#start")).to_be_focused()
        own_redis.stop()
        with page.expect_response(lambda r: r.url.endswith("/api/token")) as token:
            page.locator("#start").click()
        assert token.value.status == 503
        expect(page.locator("#notice")).to_contain_text(UNAVAILABLE_FR)
        recorder.assert_clean()
    finally:
        context.close()
        process.stop()


def test_phone_sized_screen_has_no_sideways_scroll(server, browser: Browser, redis_client) -> None:
    process, _ = server
    context = browser.new_context(
        locale="en-US", viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True
    )
    try:
        page = context.new_page()
        page.goto(f"{process.base_url}/?agent={showcase_ids()[0]}")
        expect(page.locator("#start")).to_be_visible()
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 360
        box = page.locator("#start").bounding_box()
        assert box is not None and box["height"] >= 40  # a finger-sized target
        screenshot(page, "phone.png")
    finally:
        context.close()


@contextmanager
def silent_livekit(redis_url: str, browser: Browser) -> Iterator[tuple[ServerProcess, Page]]:
    """A token server whose LIVEKIT_URL accepts the connection and never answers (a
    black-holing firewall), and a page of a fresh browser context."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes handshakes; nobody ever reads or answers
        port = silent.getsockname()[1]
        process = ServerProcess(
            env={"REDIS_URL": redis_url, "LIVEKIT_URL": f"ws://127.0.0.1:{port}"}
        ).start()
        context = browser.new_context(locale="en-US")
        try:
            yield process, context.new_page()
        finally:
            context.close()
            process.stop()


def test_cancel_while_livekit_does_not_answer(
    redis_url, redis_client, browser: Browser, tmp_path
) -> None:
    """A LiveKit host that accepts the connection and never answers (a black-holing
    firewall): the visitor is not stuck; Cancel ends the attempt at once."""
    with silent_livekit(redis_url, browser) as (process, page):
        recorder = Recorder().attach(page)
        page.goto(f"{process.base_url}/?agent={showcase_ids()[0]}")
        page.locator("#start").click()
        expect(page.locator("#step")).to_have_text("Connecting to the call…")
        cancel = page.locator("#end")
        expect(cancel).to_be_focused()
        expect(cancel).to_have_text("Cancel")
        page.keyboard.press("Enter")
        expect(page.locator("#notice")).to_have_text("You ended the call.")
        expect(page.locator("#start")).to_be_focused()
        expect(page.locator("#step")).to_have_text("")
        recorder.assert_clean()


def test_persona_withdrawn_after_the_list_loaded(server, page: Page, redis_url) -> None:
    """Sales disable the persona (showcase override) while the visitor reads its card: the
    token request answers unknown_agent, the page says so and shows the current list."""
    process, _ = server
    withdrawn = showcase_ids()[0]
    recorder = Recorder().attach(page)
    page.goto(f"{process.base_url}/?agent={withdrawn}")
    expect(page.locator("#start")).to_be_focused()

    async def disable() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            showcase = Showcase(client, load_catalog(), ttl_s=3600, cache_s=0)
            await showcase.set(withdrawn, enabled=False)
        finally:
            await client.aclose()

    # Playwright's sync API owns this thread's event loop: the async change runs beside it.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, disable()).result(timeout=10)
    cache_s = yaml.safe_load((ROOT / "policies" / "ops.yaml").read_text())["showcase"]["cache_s"]
    time.sleep(cache_s + 0.5)  # the server trusts its copy of the override this long
    with page.expect_response(lambda r: r.url.endswith("/api/token")) as token:
        page.locator("#start").click()
    assert token.value.status == 404
    expect(page.locator("#notice")).to_have_text(
        "This demo agent is no longer available. Pick another one from the list."
    )
    expect(page.locator("#call")).to_be_hidden()
    listed = [a["id"] for a in httpx.get(process.base_url + "/api/agents").json()["agents"]]
    expect(page.locator("#agents .card")).to_have_count(len(listed))
    assert card_ids(page) == listed
    expect(page.locator("#agents .card button").first).to_be_focused()
    assert "agent=" not in page.url
    recorder.assert_clean()


# --- a failed first try does not lock the visitor out (the page gives its token back) -------

IN_PROGRESS = re.compile(r"already have a demo call")


def give_back_of(response: Response) -> dict[str, str]:
    grant = response.json()
    return {"session_id": grant["session_id"], "release_secret": grant["release_secret"]}


def test_a_failed_connection_gives_the_token_back_and_call_again_works(
    server, page: Page, redis_client
) -> None:
    """LiveKit unreachable (a closed port, as behind a firewall): the page gives its unused
    token back, so "Call again" gets a new one at once instead of "a call in progress"
    (one call at a time per visitor, as shipped)."""
    process, _ = server
    recorder = Recorder().attach(page)
    # Not the first persona: the test before may have withdrawn it (the server trusts its
    # copy of the showcase override for a few seconds after the database is flushed).
    page.goto(f"{process.base_url}/?agent={showcase_ids()[1]}")
    expect(page.locator("#start")).to_be_focused()
    with page.expect_response(lambda r: r.url.endswith("/api/token")) as first:
        page.locator("#start").click()
    assert first.value.status == 201
    with page.expect_response(lambda r: r.url.endswith(GIVE_BACK), timeout=60_000) as given:
        expect(page.locator("#notice")).to_contain_text(UNREACHABLE, timeout=45_000)
    assert given.value.status == 200
    # Its own session and secret, nothing else (never the LiveKit token).
    assert given.value.request.post_data_json == give_back_of(first.value)
    session_id = first.value.json()["session_id"]
    assert session_record(redis_client, session_id)["status"] == "given_back"

    expect(page.locator("#start")).to_have_text("Call again")
    # The retry is admitted, fails the same way, and gives its own token back too.
    with page.expect_response(lambda r: r.url.endswith(GIVE_BACK), timeout=60_000) as again:
        with page.expect_response(lambda r: r.url.endswith("/api/token")) as second:
            page.locator("#start").click()
        assert second.value.status == 201, second.value.text()
    assert again.value.status == 200
    assert again.value.request.post_data_json == give_back_of(second.value)
    expect(page.locator("#notice")).to_contain_text(UNREACHABLE, timeout=45_000)
    expect(page.locator("#notice")).not_to_contain_text(IN_PROGRESS)
    recorder.assert_clean()
    assert_nothing_stored(page)


def test_cancel_gives_the_token_back_and_call_again_works(
    redis_url, redis_client, browser: Browser
) -> None:
    """The visitor presses Cancel while LiveKit does not answer (a black-holing firewall),
    then "Call again": a new token at once."""
    with silent_livekit(redis_url, browser) as (process, page):
        recorder = Recorder().attach(page)
        page.goto(f"{process.base_url}/?agent={showcase_ids()[0]}")
        expect(page.locator("#start")).to_be_focused()
        with page.expect_response(lambda r: r.url.endswith("/api/token")) as first:
            page.locator("#start").click()
        assert first.value.status == 201
        expect(page.locator("#step")).to_have_text("Connecting to the call…")
        with page.expect_response(lambda r: r.url.endswith(GIVE_BACK)) as given:
            page.locator("#end").click()
        expect(page.locator("#notice")).to_have_text("You ended the call.")
        assert given.value.status == 200
        assert given.value.request.post_data_json == give_back_of(first.value)

        with page.expect_response(lambda r: r.url.endswith("/api/token")) as second:
            page.locator("#start").click()
        assert second.value.status == 201, second.value.text()
        expect(page.locator("#notice")).not_to_contain_text(IN_PROGRESS)
        # Both records: the first given back, the second waiting to connect.
        statuses = {
            session_record(redis_client, r.json()["session_id"])["status"]
            for r in (first.value, second.value)
        }
        assert statuses == {"given_back", "issued"}
        recorder.assert_clean()


def test_leaving_the_page_before_the_agent_came_gives_the_token_back(
    redis_url, redis_client, browser: Browser
) -> None:
    """The visitor closes the tab (here: navigates away) while the call is still connecting:
    the give-back is sent with keepalive, so it reaches the server after the page is gone."""
    with silent_livekit(redis_url, browser) as (process, page):
        page.goto(f"{process.base_url}/?agent={showcase_ids()[0]}")
        expect(page.locator("#start")).to_be_focused()
        with page.expect_response(lambda r: r.url.endswith("/api/token")) as first:
            page.locator("#start").click()
        session_id = first.value.json()["session_id"]
        expect(page.locator("#step")).to_have_text("Connecting to the call…")
        page.goto("about:blank")
        wait_until(
            lambda: session_record(redis_client, session_id).get("status") == "given_back",
            timeout=15,
        )
        assert httpx.post(process.base_url + "/api/token", json={"agent": "agence-immo-fr"}
                          ).status_code == 201  # fmt: skip
