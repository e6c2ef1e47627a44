"""The sales request form on the demo page, in real headless Chromium against the real token
server and a real Redis: checked before it is sent (every problem by its field, in French or
English, the focus on the first), the server's own per-field answer shown the same way, the
reference on success, the day's limit with the wait in words, Redis down in plain words, the
honeypot out of people's sight and reach; no cookie, nothing in the browser's storage, no
request anywhere but the page's own origin."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from playwright.sync_api import (
    Browser,
    Locator,
    Page,
    Request,
    Route,
    expect,
)

from redisdb import keys
from tests.support import ServerProcess
from tests.web.support import Recorder, chromium, origin, screenshot, wait_words
from tests.web.test_page import PRIVACY_URL, assert_nothing_stored, start_server

pytestmark = pytest.mark.browser

REFERENCE = re.compile(r"[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}")
FIELDS = ("name", "email", "phone", "company", "message", "language")
ENGLISH = {
    "name": "Bartholomew Yarrowfield",
    "email": "b.yarrowfield@lettings-example.co.uk",
    "phone": "07700 900461",
    "company": "Yarrowfield Lettings",
    "message": "Hello,\nwe would like this for our lettings desk.",
}
FRENCH = {
    "name": "Zéphyrine Quaglia-Brun",
    "email": "Zephyrine.Quaglia@agence-exemple.fr",
    "phone": "+33 6 71 82 93 04",
    "company": "Agence Quaglia Immobilier",
    "message": "Bonjour,\nnous voulons la démo pour nos 3 agences.",
}
REQUESTS = "/api/requests"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def server(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process, _ = start_server(redis_url, tmp_path_factory.mktemp("form"))
    yield process
    process.stop()


def open_page(browser: Browser, locale: str, url: str, **options: object) -> Page:
    context = browser.new_context(locale=locale, **options)  # type: ignore[arg-type]
    return context.new_page()


def field(page: Page, name: str) -> Locator:
    return page.locator(f"#request-{name}")


def fill(page: Page, values: dict[str, str]) -> None:
    for name, value in values.items():
        field(page, name).fill(value)


def shown_errors(page: Page) -> dict[str, str]:
    """The message under each field that has one, and that it is marked invalid."""
    found = {}
    for name in FIELDS:
        message = page.locator(f"#request-{name}-error")
        if message.is_visible():
            found[name] = message.inner_text()
            expect(field(page, name)).to_have_attribute("aria-invalid", "true")
        else:
            expect(field(page, name)).not_to_have_attribute("aria-invalid", "true")
    return found


def stored_request(client: redis.Redis, reference: str) -> dict[str, str]:
    record: dict[bytes, bytes] = client.hgetall(keys.request(reference))  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in record.items()}


def request_keys(client: redis.Redis) -> list[bytes]:
    return list(client.scan_iter(keys.pattern(keys.REQUEST)))


def test_english_form_checked_per_field_then_sent_with_a_reference(
    server: ServerProcess, browser: Browser, redis_client: redis.Redis
) -> None:
    page = open_page(browser, "en-US", server.base_url)
    recorder = Recorder().attach(page)
    page.goto(f"{server.base_url}/?agent=realty-desk-en")
    # Always reachable: the link at the top of the page takes the keyboard to the form.
    page.get_by_role("link", name="I want this for my agency").click()
    expect(field(page, "name")).to_be_focused()
    for name, label in [("name", "Your name"), ("email", "Email"), ("phone", "Phone (optional)"),
                        ("company", "Agency or company"), ("message", "Your message"),
                        ("language", "Answer me in")]:  # fmt: skip
        expect(page.get_by_label(label, exact=True)).to_have_attribute("id", f"request-{name}")
    expect(page.locator("#request-privacy-link")).to_have_attribute("href", PRIVACY_URL)
    expect(page.locator("#request-consent")).to_contain_text(
        "up to 12 months after our last contact"
    )
    expect(field(page, "language")).to_have_value("en")

    # Nothing filled in: every required field says so, the focus goes to the first.
    page.locator("#request-send").click()
    required = "Please fill in this field."
    expect(page.locator("#request-error")).to_have_text("4 fields need your attention.")
    assert shown_errors(page) == dict.fromkeys(("name", "email", "company", "message"), required)
    expect(field(page, "name")).to_be_focused()

    # Shapes: the email and the phone are wrong, the name now right.
    fill(page, {"name": ENGLISH["name"], "email": "b.yarrowfield@lettings-example", "phone": "12"})
    page.locator("#request-send").click()
    assert shown_errors(page) == {
        "email": "This email address does not look valid (for example: name@agency.com).",
        "phone": "This number does not look valid: 6 to 15 digits, with +, spaces, dots,"
        " dashes or brackets if you like.",
        "company": required,
        "message": required,
    }
    expect(field(page, "email")).to_be_focused()
    screenshot(page, "request-errors.png")
    assert recorder.urls(REQUESTS) == []  # nothing was sent while the form had problems

    fill(page, ENGLISH)
    # Correcting a field takes its message away.
    assert "email" not in shown_errors(page)
    with page.expect_response(lambda r: r.url.endswith(REQUESTS)) as answer:
        page.locator("#request-send").click()
    assert answer.value.status == 201
    reference = answer.value.json()["reference"]
    assert REFERENCE.fullmatch(reference)
    result = page.locator("#request-result")
    expect(result).to_have_text(
        f"Thank you! Your request is on its way to our team. Its reference is {reference}:"
        " quote it if you write to us."
    )
    expect(result).to_be_focused()
    expect(page.locator("#request-error")).to_be_hidden()
    expect(field(page, "name")).to_have_value("")
    screenshot(page, "request-sent.png")

    # What went over the wire: the form, the context the page adds, the empty honeypot.
    sent = answer.value.request.post_data_json
    assert sent == {**ENGLISH, "language": "en", "page_language": "en",
                    "persona": "realty-desk-en", "website": ""}  # fmt: skip
    record = stored_request(redis_client, reference)
    assert {k: record[k] for k in (*ENGLISH, "language", "page_language", "persona")} == {
        **ENGLISH, "language": "en", "page_language": "en", "persona": "realty-desk-en"
    }  # fmt: skip
    assert "session_id" not in record  # no call was made

    recorder.assert_clean()
    recorder.assert_origins(origin(server.base_url))
    assert_nothing_stored(page)
    page.context.close()


def test_french_form_shows_the_servers_own_answer_per_field(
    server: ServerProcess, browser: Browser, redis_client: redis.Redis
) -> None:
    """The page checks what it can; the server has the last word, and its `fields` answer is
    shown the same way, in the page's language. (The body is altered on its way out, so the
    real server finds what the page would not have let through.)"""
    page = open_page(browser, "fr-FR", server.base_url)
    recorder = Recorder().attach(page)
    page.goto(f"{server.base_url}/?agent=agence-immo-fr")
    expect(page.locator("#request-heading")).to_have_text("Je veux ça pour mon agence")
    expect(page.locator("#request-consent")).to_contain_text(
        "jusqu'à 12 mois après notre dernier contact"
    )
    fill(page, FRENCH)
    # Answer in English, from a page in French: both are sent.
    field(page, "language").select_option("en")

    def spoil(route: Route, request: Request) -> None:
        body = {**json.loads(request.post_data or "{}"), "name": "Z", "email": "z@@agence.fr"}
        route.continue_(post_data=json.dumps(body))

    page.route(f"**{REQUESTS}", spoil)
    with page.expect_response(lambda r: r.url.endswith(REQUESTS)) as refused:
        page.locator("#request-send").click()
    assert refused.value.status == 422
    assert set(refused.value.json()["fields"]) == {"name", "email"}
    assert shown_errors(page) == {
        "name": "Au moins 2 caractères, s'il vous plaît.",
        "email": "Cette adresse e-mail ne semble pas valide (exemple : nom@agence.fr).",
    }
    expect(page.locator("#request-error")).to_have_text("2 champs sont à corriger.")
    expect(field(page, "name")).to_be_focused()
    # What the visitor typed is still there, to be sent again.
    expect(field(page, "email")).to_have_value(FRENCH["email"])
    assert request_keys(redis_client) == []

    page.unroute(f"**{REQUESTS}")
    with page.expect_response(lambda r: r.url.endswith(REQUESTS)) as answer:
        page.locator("#request-send").click()
    assert answer.value.status == 201
    reference = answer.value.json()["reference"]
    expect(page.locator("#request-result")).to_have_text(
        f"Merci ! Votre demande est transmise à notre équipe. Sa référence est {reference} :"
        " rappelez-la si vous nous écrivez."
    )
    expect(page.locator("#request-error")).to_be_hidden()
    assert shown_errors(page) == {}
    record = stored_request(redis_client, reference)
    assert (record["language"], record["page_language"]) == ("en", "fr")
    assert record["message"] == FRENCH["message"]
    recorder.assert_clean()
    recorder.assert_origins(origin(server.base_url))
    assert_nothing_stored(page)
    page.context.close()


LIMIT_WORDS = {
    "en-GB": "You have already sent 3 requests today. You can send another one in {wait}.",
    "fr-FR": "Vous avez déjà envoyé 3 demandes aujourd'hui. Vous pourrez en envoyer une autre"
    " dans {wait}.",
}


@pytest.mark.parametrize(("locale", "wording"), LIMIT_WORDS.items(), ids=["en", "fr"])
def test_the_days_limit_is_refused_with_the_wait_in_words(
    server: ServerProcess, browser: Browser, redis_client: redis.Redis, locale: str, wording: str
) -> None:
    # The visitor's three requests of the day (same address as the browser: 127.0.0.1).
    for n in range(3):
        body = {**ENGLISH, "email": f"n{n}@lettings-example.co.uk", "language": "en"}
        assert httpx.post(server.base_url + REQUESTS, json=body).status_code == 201
    page = open_page(browser, locale, server.base_url)
    recorder = Recorder().attach(page)
    page.goto(server.base_url + "/")
    fill(page, FRENCH)
    with page.expect_response(lambda r: r.url.endswith(REQUESTS)) as answer:
        page.locator("#request-send").click()
    assert answer.value.status == 429
    retry_after = int(answer.value.headers["retry-after"])
    expected = wording.format(wait=wait_words(retry_after, locale[:2]))
    expect(page.locator("#request-error")).to_have_text(expected)
    expect(page.locator("#request-result")).to_be_hidden()
    expect(field(page, "message")).to_have_value(FRENCH["message"])  # nothing lost
    assert shown_errors(page) == {}
    assert len(request_keys(redis_client)) == 3
    if locale == "en-GB":
        screenshot(page, "request-limit.png")
    recorder.assert_clean()
    page.context.close()


def test_redis_down_says_nothing_was_saved(own_redis, browser: Browser, tmp_path: Path) -> None:
    process, _ = start_server(own_redis.url, tmp_path)
    try:
        page = open_page(browser, "fr-FR", process.base_url)
        recorder = Recorder().attach(page)
        page.goto(process.base_url + "/")
        fill(page, FRENCH)
        own_redis.stop()
        with page.expect_response(lambda r: r.url.endswith(REQUESTS)) as answer:
            page.locator("#request-send").click()
        assert answer.value.status == 503
        expect(page.locator("#request-error")).to_have_text(
            "Votre demande n'a pas pu être enregistrée : le service est momentanément"
            " indisponible. Réessayez dans un instant."
        )
        expect(page.locator("#request-send")).to_be_enabled()
        recorder.assert_clean()
        page.context.close()
    finally:
        process.stop()


def test_the_honeypot_is_out_of_peoples_sight_and_reach(
    server: ServerProcess, browser: Browser, redis_client: redis.Redis
) -> None:
    page = open_page(browser, "en-US", server.base_url)
    page.goto(server.base_url + "/")
    trap = page.locator("#request-website")
    box = trap.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 0  # off the page
    expect(page.locator(".hp")).to_have_attribute("aria-hidden", "true")
    # The keyboard goes from the language straight to the privacy link, never into it.
    field(page, "language").focus()
    page.keyboard.press("Tab")
    expect(page.locator("#request-privacy-link")).to_be_focused()

    # A script that fills everything in gets the same answer as a person, and nothing is kept.
    fill(page, ENGLISH)
    trap.fill("https://spam.example", force=True)
    with page.expect_response(lambda r: r.url.endswith(REQUESTS)) as answer:
        page.locator("#request-send").click()
    assert answer.value.status == 201
    assert json.loads(answer.value.request.post_data or "{}")["website"] == "https://spam.example"
    expect(page.locator("#request-result")).to_contain_text(answer.value.json()["reference"])
    assert request_keys(redis_client) == []
    page.context.close()


def test_the_form_is_one_column_on_a_phone(
    server: ServerProcess, browser: Browser, redis_client: redis.Redis
) -> None:
    page = open_page(
        browser, "en-US", server.base_url,
        viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True,
    )  # fmt: skip
    page.goto(server.base_url + "/")
    page.locator("#request-send").click()
    expect(field(page, "name")).to_be_focused()
    boxes = [field(page, name).bounding_box() for name in FIELDS]
    assert all(b is not None for b in boxes)
    lefts = {round(b["x"]) for b in boxes if b}
    assert len(lefts) == 1, boxes  # one above the other
    tops = [b["y"] for b in boxes if b]
    assert tops == sorted(tops)
    assert all(b["width"] >= 280 and b["height"] >= 40 for b in boxes if b)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
    screenshot(page, "request-phone.png")
    page.context.close()
