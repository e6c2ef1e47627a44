"""A real call, end to end, in French and in English: headless Chromium's fake microphone
plays the caller's lines (espeak-ng), the real demo page from the real token server joins
through a real livekit-server, which dispatches `python -m agent start` (the real Deepgram
and OpenAI plugins against the local vendor fakes); the agent's voice comes back to the
page, a viewing is booked by voice, the agent ends the call, the room is deleted and the
Redis record is complete. Everything runs inside scripts/offline: nothing but 127.0.0.0/8.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from playwright.sync_api import Page, expect, sync_playwright

from policies import keys
from tests.e2e_page import (
    CallerLine,
    caller_wav,
    candidate_addresses,
    instrumented,
    launch_with_microphone,
    measures,
    off_loopback,
)
from tests.livekit_stack import OUTPUT, Stack, running_stack, wait_for
from tests.test_voice_calls import ENGLISH, FRENCH, SpokenCall, _with_dates
from tests.web_support import Recorder, ensure_bundle

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

    def fakes_config(self) -> dict[str, Any]:
        call = _with_dates(self.call)
        return {
            "turns": [
                {"user_says": call.question,
                 "replies": [{"tool": "find_listings", "arguments": call.search},
                             {"say": call.answer}]},
                {"user_says": call.booking,
                 "replies": [{"tool": "book_visit", "arguments": call.book},
                             {"say": call.confirmation}]},
                {"user_says": call.goodbye,
                 "replies": [{"tool": "end_call", "arguments": {}, "say_first": call.farewell}]},
            ],
            "transcripts": [call.question, call.booking, call.goodbye],
            "speech": {"language": self.language, "words_per_minute": AGENT_WORDS_PER_MINUTE},
        }  # fmt: skip

    def lines(self) -> list[CallerLine]:
        said = (self.call.question, self.call.booking, self.call.goodbye)
        return [CallerLine(at, text) for at, text in zip(LINE_TIMES_S, said, strict=True)]


SCENARIOS = {
    "en": Scenario(ENGLISH, "en", re.compile(r"The agent ended the call")),
    "fr": Scenario(FRENCH, "fr", re.compile(r"L'agent a mis fin à l'appel")),
}


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
            _run_call(page, stack, scenario, call, language)
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


def _run_call(page: Page, stack: Stack, scenario: Scenario, call: SpokenCall, lang: str) -> None:
    out = OUTPUT / f"call-{lang}"
    # debug=1: livekit-client's own console logging, kept in console.log for a failure.
    page.goto(f"{stack.base_url}/?agent={call.persona}&lang={lang}&debug=1")
    start = page.locator("#start")
    expect(start).to_be_enabled(timeout=15_000)
    started = time.monotonic()
    start.click()

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
    # Nothing the caller said is stored.
    blob = str({_text(k): client.dump(k) for k in client.scan_iter()})
    for private in call.private_words:
        assert private not in blob
