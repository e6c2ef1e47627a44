"""A real call, end to end, in French and in English: headless Chromium's fake microphone
plays the caller's lines (espeak-ng), the real demo page from the real token server joins
through a real livekit-server, which dispatches `python -m agent start` (the real Deepgram
and OpenAI plugins against the local vendor fakes); the agent's voice comes back to the
page, a viewing is booked by voice, the agent ends the call, the room is deleted and the
Redis record is complete. After the call the page shows what the worker sent it: how long
each reply took (a toggle hides the figures) and the recap with the booked viewing, which
the visitor may copy into the sales request form, sent with the call's session id.
A line said before the agent joined reaches it through the page's pre-connect buffer.
Everything runs inside scripts/offline: nothing but 127.0.0.0/8.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from playwright.sync_api import Page, Route, expect, sync_playwright

from redisdb import keys
from tests.e2e.livekit_stack import OUTPUT, Stack, running_stack, wait_for
from tests.e2e.page import (
    CallerLine,
    caller_wav,
    candidate_addresses,
    instrumented,
    launch_with_microphone,
    measures,
    off_loopback,
)
from tests.voice.test_calls import ENGLISH, FRENCH, SpokenCall, _with_dates
from tests.web.support import Recorder, ensure_bundle

pytestmark = pytest.mark.e2e

# The agent speaks quicker than espeak-ng's default so the call stays short.
AGENT_WORDS_PER_MINUTE = 260
# When the caller says each line, from the moment the page opens the microphone: after the
# greeting, then after each answer, with room to spare on a busy 2-core machine.
LINE_TIMES_S = (9.0, 23.0, 38.0)
WAV_SECONDS = 60.0


@dataclass(frozen=True)
class Scenario:
    call: SpokenCall
    language: str
    end_words: re.Pattern[str]  # the page's sentence for end_reason=end_call
    # The page's words after the call (web/src/strings.json).
    latency: re.Pattern[str]
    recap_heading: str
    prefill_intro: str

    def fakes_config(self) -> dict[str, Any]:
        call = _with_dates(self.call)
        return {
            **call.script().to_json(),
            "transcripts": [call.question, call.booking, call.goodbye],
            "speech": {"language": self.language, "words_per_minute": AGENT_WORDS_PER_MINUTE},
        }

    def lines(self) -> list[CallerLine]:
        said = (self.call.question, self.call.booking, self.call.goodbye)
        return [CallerLine(at, text) for at, text in zip(LINE_TIMES_S, said, strict=True)]


SCENARIOS = {
    "en": Scenario(
        ENGLISH, "en", re.compile(r"The agent ended the call"),
        re.compile(r"^answered in \d+\.\d\s?s$"), "What the agent did for you",
        "From my demo call with",
    ),
    "fr": Scenario(
        FRENCH, "fr", re.compile(r"L'agent a mis fin à l'appel"),
        re.compile(r"^répondu en \d+,\d\s?s$"), "Ce que l'agent a fait pour vous",
        "Suite à mon appel de démonstration avec",
    ),
}  # fmt: skip
# The visitor's own details in the request form after the call (not the caller's in the call).
REQUEST_FORM = {"name": "Prudence Okonkwo-Lefèvre", "email": "p.okonkwo@agence-exemple.fr",
                "company": "Agence Okonkwo"}  # fmt: skip


@pytest.fixture(scope="module")
def bundle() -> None:
    ensure_bundle()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@pytest.mark.parametrize("language", ["en", "fr"])
def test_a_whole_call_through_livekit(language: str, redis_url: str, bundle: None) -> None:
    scenario = SCENARIOS[language]
    call = _with_dates(scenario.call)
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    out = OUTPUT / f"call-{language}"
    wav = caller_wav(out / "caller.wav", scenario.lines(), language, WAV_SECONDS)

    with (
        running_stack(redis_url, fakes_config=scenario.fakes_config(), name=f"call-{language}")
        as stack,
        sync_playwright() as pw,
    ):  # fmt: skip
        browser = launch_with_microphone(pw, wav)
        context = browser.new_context(locale="en-US" if language == "en" else "fr-FR")
        page = instrumented(context.new_page())
        recorder = Recorder().attach(page)
        console: list[str] = []
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        try:
            sid = _run_call(page, stack, scenario, call, language)
            _after_the_call(page, stack, scenario, call, sid, client)
            data = measures(page)
        finally:
            page.screenshot(path=str(out / "last.png"), full_page=True)
            (out / "page-measures.json").write_text(json.dumps(measures(page), indent=1))
            (out / "console.log").write_text("\n".join(console))
            context.close()
            browser.close()

        # Nothing but 127.0.0.0/8 was offered or used by the page's peer connections.
        addresses = candidate_addresses(data["candidates"])
        assert addresses, "no ICE candidate was seen"
        assert off_loopback(addresses) == [], data["candidates"]
        pair_addresses = [a for pair in data["pairs"] for a in pair if a]
        assert pair_addresses, "no connected candidate pair was seen"
        assert off_loopback(pair_addresses) == []
        # ... and livekit-server offered and used nothing else, for the visitor or the agent.
        by_participant = stack.ice_candidates()
        assert len(by_participant) == 2, by_participant
        for participant, seen in by_participant.items():
            assert all(a.startswith("127.") for a in seen), (participant, seen)

        # The room is deleted once the agent has ended the call.
        wait_for(lambda: f"demo-{session_id(client)}" not in stack.room_names(), 20, "room deleted")
        recorder.assert_origins(
            f"127.0.0.1:{stack.token_server.port}", f"127.0.0.1:{stack.livekit.config.port}"
        )

        # The viewing was booked through the real tool, by voice.
        outputs = stack.fakes.get("/fake/tool_outputs") if stack.fakes else []
        booked = [o for o in outputs if o["name"] == "book_visit"]
        assert booked and json.loads(booked[0]["output"])["status"] == "booked", outputs

    _check_record(client, call)


def session_id(client: redis.Redis) -> str:
    sessions = [_text(k) for k in client.scan_iter(keys.pattern(keys.SESSION))]
    assert len(sessions) == 1, sessions
    return sessions[0].rsplit(":", 1)[1]


def _run_call(page: Page, stack: Stack, scenario: Scenario, call: SpokenCall, lang: str) -> str:
    """The call, up to the agent hanging up; its session id."""
    out = OUTPUT / f"call-{lang}"
    # debug=1: livekit-client's own console logging, kept in console.log for a failure.
    page.goto(f"{stack.base_url}/?agent={call.persona}&lang={lang}&debug=1")
    start = page.locator("#start")
    expect(start).to_be_enabled(timeout=15_000)
    started = time.monotonic()
    with page.expect_response(lambda r: r.url.endswith("/api/token")) as token:
        start.click()
    sid = str(token.value.json()["session_id"])

    # The agent joins and its greeting is heard: energy on the remote audio track.
    expect(page.locator("#agent-state")).not_to_have_attribute(
        "data-state", "connecting", timeout=30_000
    )
    page.wait_for_function(
        "() => __ocf.levels.some(([, rms]) => rms > 0.02)", timeout=30_000, polling=100
    )
    heard_after = time.monotonic() - started
    greeting = page.locator('#transcript li[data-speaker="agent"]').first
    expect(greeting).to_contain_text(_greeting_start(call), timeout=15_000)
    page.screenshot(path=str(out / "in-call.png"), full_page=True)

    # The caller's lines and the agent's answers, all in the live transcript.
    transcript = page.locator("#transcript")
    expect(transcript).to_contain_text(_words(call.question), timeout=40_000)
    expect(transcript).to_contain_text(_words(call.answer), timeout=40_000)
    expect(transcript).to_contain_text(_words(call.confirmation), timeout=40_000)
    page.screenshot(path=str(out / "booked.png"), full_page=True)
    expect(transcript).to_contain_text(_words(call.farewell), timeout=40_000)

    # end_call: the agent hangs up and the page says so, in the page's language.
    expect(page.locator("#notice")).to_contain_text(scenario.end_words, timeout=40_000)
    expect(page.locator("#start")).to_be_visible()
    page.screenshot(path=str(out / "ended.png"), full_page=True)
    states = measures(page)["states"]
    assert {"listening", "thinking", "speaking"} <= set(states), states
    print(f"[{lang}] greeting heard {heard_after:.1f} s after Start; states {states}")
    return sid


def _after_the_call(
    page: Page, stack: Stack, scenario: Scenario, call: SpokenCall, sid: str,
    client: redis.Redis,
) -> None:  # fmt: skip
    """What the worker sent shows on the page once the call is over; the form can take it."""
    out = OUTPUT / f"call-{scenario.language}"
    # The reply times, beside the agent's replies (never the greeting: it answered nothing).
    figures = page.locator("#transcript .latency")
    expect(figures.first).to_be_visible()
    shown = figures.all_inner_texts()
    assert shown and all(scenario.latency.match(text) for text in shown), shown
    assert page.locator('#transcript li[data-speaker="agent"] .latency').count() == len(shown)
    first_line = page.locator("#transcript li").first
    assert first_line.get_attribute("data-speaker") == "agent"
    expect(first_line.locator(".latency")).to_have_count(0)
    # The visitor hides them, and brings them back: the page alone remembers.
    toggle = page.locator("#show-latency")
    expect(toggle).to_be_checked()
    toggle.uncheck()
    for index in range(len(shown)):
        expect(figures.nth(index)).to_be_hidden()
    toggle.check()
    expect(figures.first).to_be_visible()

    # The recap: the viewing the tool really booked, in the call's language.
    outputs = stack.fakes.get("/fake/tool_outputs") if stack.fakes else []
    [booked] = [json.loads(o["output"]) for o in outputs if o["name"] == "book_visit"]
    recap = page.locator("#recap")
    expect(recap).to_be_visible(timeout=15_000)
    expect(page.locator("#recap-heading")).to_have_text(scenario.recap_heading)
    [item] = page.locator("#recap-items li").all()
    expect(item).to_contain_text(booked["reference"])
    expect(item).to_contain_text(booked["slot"]["said"])
    expect(item).to_contain_text(str(call.book["name"]))
    expect(page.locator("#recap-items")).to_have_attribute("lang", scenario.language)
    # The form is offered, and its message stays empty until the visitor asks for the recap.
    expect(page.locator("#after-call")).to_be_visible()
    message = page.locator("#request-message")
    expect(message).to_have_value("")
    page.screenshot(path=str(out / "recap.png"), full_page=True)
    page.locator("#recap-prefill").click()
    expect(message).to_be_focused()
    typed = message.input_value()
    assert typed.startswith(scenario.prefill_intro), typed
    assert f"- {item.inner_text()}" in typed

    # Sent with the call's session id: the server links it (the same visitor's own call).
    for name, value in REQUEST_FORM.items():
        page.locator(f"#request-{name}").fill(value)
    with page.expect_response(lambda r: r.url.endswith("/api/requests")) as answer:
        page.locator("#request-send").click()
    assert answer.value.status == 201, answer.value.text()
    sent = json.loads(answer.value.request.post_data or "{}")
    assert (sent["session_id"], sent["persona"]) == (sid, call.persona)
    reference = answer.value.json()["reference"]
    expect(page.locator("#request-result")).to_contain_text(reference)
    record = {_text(k): _text(v) for k, v in client.hgetall(keys.request(reference)).items()}
    assert (record["session_id"], record["persona"]) == (sid, call.persona)
    # The recap is nowhere but the page: not in the browser's storage, not in Redis.
    assert page.context.cookies() == []
    assert page.evaluate("() => localStorage.length + sessionStorage.length") == 0
    stored = str({_text(k): client.dump(k) for k in client.scan_iter()
                  if not _text(k).startswith(keys.request(""))})  # fmt: skip
    assert booked["reference"] not in stored


def _greeting_start(call: SpokenCall) -> str:
    from agents_catalog import load_catalog

    persona = load_catalog().get(call.persona)
    assert persona is not None
    return persona.greeting.split(",")[0]


def _words(text: str) -> str:
    """The first few words of a line: enough to find it, robust to how the page splits it."""
    return " ".join(text.split()[:4])


def _check_record(client: redis.Redis, call: SpokenCall) -> None:
    sid = session_id(client)
    record = {_text(k): _text(v) for k, v in client.hgetall(keys.session(sid)).items()}
    assert record["status"] == "ended", record
    assert record["end_reason"] == "end_call"
    assert record["persona"] == call.persona
    assert float(record["duration_s"]) > 10
    assert int(record["turns"]) >= 3
    assert int(record["llm_prompt_tokens"]) > 0
    assert int(record["llm_completion_tokens"]) > 0
    assert float(record["stt_audio_s"]) > 10
    assert int(record["tts_chars"]) > 50
    assert record["connection_quality"].split()[0] in ("excellent", "good")
    # The slot is free and the unused minutes are back.
    assert client.zscore(keys.global_active(), sid) is None
    assert not [k for k in client.scan_iter(keys.pattern(keys.VISITOR_ACTIVE))
                if client.zscore(k, sid) is not None]  # fmt: skip
    assert int(record["refunded_s"]) == int(record["reserved_s"]) - int(record["used_s"])
    assert int(record["refunded_s"]) > 0
    # Nothing the caller said is stored (but in the sales request the visitor chose to send
    # with the recap copied into it).
    blob = str({_text(k): client.dump(k) for k in client.scan_iter()
                if not _text(k).startswith(keys.request(""))})  # fmt: skip
    for private in call.private_words:
        assert private not in blob


def test_words_said_before_the_agent_joined_reach_it(redis_url: str, bundle: None) -> None:
    """The page records the microphone from the moment it is granted (livekit-client's
    pre-connect buffer): a question said while the token request is still held back, so
    before any room or agent exists, is sent to the agent once it joins, transcribed for the
    page and answered."""
    scenario = SCENARIOS["en"]
    call = _with_dates(scenario.call)
    redis.Redis.from_url(redis_url).flushdb()
    out = OUTPUT / "call-pre-connect"
    # The question at once, then silence: the live microphone carries nothing but silence
    # once the call is connected.
    wav = caller_wav(out / "caller.wav", [CallerLine(0.3, call.question)], "en", 40.0)
    with (
        running_stack(redis_url, fakes_config=scenario.fakes_config(), name="call-pre-connect")
        as stack,
        sync_playwright() as pw,
    ):  # fmt: skip
        browser = launch_with_microphone(pw, wav)
        page = browser.new_context(locale="en-US").new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        held: list[Route] = []
        page.route("**/api/token", lambda route: held.append(route))
        try:
            page.goto(f"{stack.base_url}/?agent={call.persona}&lang=en&debug=1")
            page.locator("#start").click()
            expect(page.locator("#step")).to_have_text("Reserving a demo line…")
            # The question lasts about 3 s: all of it is said before the token is even given.
            wait_for(lambda: bool(held), 10, "the token request")
            time.sleep(5.0)
            held[0].continue_()
            transcript = page.locator("#transcript")
            you = page.locator('#transcript li[data-speaker="you"]')
            expect(you.first).to_contain_text(_words(call.question), timeout=60_000)
            expect(transcript).to_contain_text(_words(call.answer), timeout=60_000)
            page.screenshot(path=str(out / "answered.png"), full_page=True)
            page.locator("#end").click()
            expect(page.locator("#notice")).to_have_text("You ended the call.")
        finally:
            (out / "console.log").write_text("\n".join(console))
            browser.close()
        worker_log = stack.worker.logs() if stack.worker else ""
        outputs = stack.fakes.get("/fake/tool_outputs") if stack.fakes else []
    # The agent acted on the question it heard from the buffer.
    assert [o["name"] for o in outputs] == ["find_listings"], outputs
    for warning in ("registered after room connection", "timeout waiting for pre-connect",
                    "pre-connect audio buffer is too old"):  # fmt: skip
        assert warning not in worker_log
