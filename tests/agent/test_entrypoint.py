"""The worker's entrypoint as a job runs it: a job context from livekit-agents' own testing
helper (`fake_job_context`: no LiveKit server, the room is never connected), the real
Deepgram and OpenAI plugins pointed at the local vendor fakes, a real Redis. The call
greets, runs out its (short) maximum duration and leaves its record. A job whose session
another job holds, or that is closed, runs nothing."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from livekit.agents.testing import fake_job_context
from livekit.agents.utils import http_context

from agent.claiming import claim_at_start
from agent.conversation import default_conversation
from agent.dispatch import parse_job_metadata
from agent.worker import entrypoint
from policies.admission import Admission, Admitted
from policies.claim import Claims
from redisdb import keys
from redisdb.connection import connect
from tests.agent.support import CATALOG, POLICIES
from tests.fakes.server import running_vendor_fakes

SESSION_ID = "EntryPoint0001xyz"
VISITOR = "f" * 32


def metadata(**override: object) -> str:
    base: dict[str, object] = {"persona": "realty-desk-en", "session_id": SESSION_ID,
                               "language": "en", "max_duration_s": 2}  # fmt: skip
    base.update(override)
    return json.dumps(base)


async def record_of(client, session_id: str, status: str, timeout: float = 15) -> dict[str, str]:
    for _ in range(int(timeout / 0.05)):
        raw = client.hgetall(keys.session(session_id))
        record = {k.decode(): v.decode() for k, v in raw.items()}
        if record.get("status") == status:
            return record
        await asyncio.sleep(0.05)
    raise AssertionError(f"record never reached {status}: {record}")


async def test_entrypoint_runs_a_call_with_the_real_plugins(redis_url, redis_client, monkeypatch):
    persona = CATALOG.get("realty-desk-en")
    assert persona is not None
    phrases = default_conversation().phrases["en"]
    redis = connect(redis_url)
    decision = await Admission(redis, POLICIES).admit(
        visitor=VISITOR, session_id=SESSION_ID, persona=persona.id, duration_s=240,
        record={"status": "issued", "visitor": VISITOR, "persona": persona.id},
    )  # fmt: skip
    assert isinstance(decision, Admitted)
    # The worker claimed it when LiveKit offered the job; the entrypoint finds it its own.
    assert (await Claims(redis, POLICIES).claim(SESSION_ID, "fake-job")).ours
    async with running_vendor_fakes() as fakes:
        for name, value in {**fakes.env(), "REDIS_URL": redis_url}.items():
            monkeypatch.setenv(name, value)
        async with http_context.open():
            with fake_job_context(job_metadata=metadata(issued_at=decision.issued_at)) as ctx:
                await entrypoint(ctx)
                async with ctx.primary_session as session:
                    # No remote session host: a visitor could otherwise read the prompt and
                    # drive the LLM over the room's data channel.
                    assert session._session_host is None
                    assert session._room_io is not None
                    room_options = session._room_io._options
                    assert room_options.text_input is False
                    assert room_options.video_input is False
                    assert room_options.close_on_disconnect is True
                    record = await record_of(redis_client, SESSION_ID, "ended")

    assert record["end_reason"] == "max_duration" and record["claimed_by"] == "fake-job"
    assert 0 <= float(record["join_delay_s"]) < 5
    assert 2 <= float(record["duration_s"]) < 12
    assert record["turns"] == "0" and record["llm_prompt_tokens"] == "0"
    assert redis_client.zscore(keys.global_active(), SESSION_ID) is None
    # The greeting went straight to TTS (no LLM request), in the persona's voice, raw PCM.
    assert fakes.chat.requests == []
    said = [r.text for r in fakes.speech.requests]
    # Sentence by sentence (the framework streams a non-streaming TTS per sentence, so the
    # first sentence plays while the next is synthesised).
    assert " ".join(said) == f"{persona.greeting} {phrases.duration_goodbye}"
    assert len(said) == 4
    # Usage as the TTS counts it (what it was sent, after the session's text transforms).
    assert 0 < int(record["tts_chars"]) <= sum(len(text) for text in said)
    first = fakes.speech.requests[0].body
    assert first["voice"] == persona.voice.voice and first["model"] == persona.voice.model
    assert first["response_format"] == "pcm"
    assert first["instructions"] == persona.voice.style
    await redis.aclose()


@pytest.mark.parametrize("raw", ["", "{}", metadata(persona="nobody-here")])
async def test_entrypoint_refuses_bad_metadata_and_writes_nothing(raw, redis_url, redis_client,
                                                                  monkeypatch):  # fmt: skip
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-unused")
    monkeypatch.setenv("DEEPGRAM_API_KEY", "dg-unused")
    reasons: list[str] = []
    with fake_job_context(job_metadata=raw) as ctx:
        ctx._on_shutdown = reasons.append
        await entrypoint(ctx)
        with pytest.raises(RuntimeError):
            _ = ctx.primary_session  # no session was ever started
    assert reasons == ["bad_metadata"]
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize("closed", [False, True])
async def test_entrypoint_runs_nothing_for_a_session_not_its_own(
    closed, redis_url, redis_client, monkeypatch
):
    """Claimed by another job (its call is live), or closed: no call, record unchanged."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-unused")
    monkeypatch.setenv("DEEPGRAM_API_KEY", "dg-unused")
    redis = connect(redis_url)
    await Admission(redis, POLICIES).admit(
        visitor=VISITOR, session_id=SESSION_ID, persona="realty-desk-en", duration_s=240,
        record={"status": "issued", "visitor": VISITOR, "persona": "realty-desk-en"},
    )  # fmt: skip
    assert (await Claims(redis, POLICIES).claim(SESSION_ID, "AJ_other")).ours
    if closed:
        await Admission(redis, POLICIES).release(SESSION_ID, 60, "end_call", {"status": "ended"})
    before = redis_client.hgetall(keys.session(SESSION_ID))
    reasons: list[str] = []
    with fake_job_context(job_metadata=metadata()) as ctx:
        ctx._on_shutdown = reasons.append
        await entrypoint(ctx)
        with pytest.raises(RuntimeError):
            _ = ctx.primary_session  # no session was ever started
    assert reasons == ["session_not_ours"]
    assert redis_client.hgetall(keys.session(SESSION_ID)) == before
    await redis.aclose()


async def test_entrypoint_goes_on_when_redis_cannot_confirm_the_claim(caplog):
    """Redis down when the job starts: the request-time claim holds (the job was only
    accepted because it succeeded), so the call runs; the gap is logged."""
    spec = parse_job_metadata(metadata(), CATALOG, POLICIES)
    dead = connect("redis://127.0.0.1:1/0", 0.2)
    caplog.set_level(logging.WARNING, logger="agent.claiming")
    with fake_job_context(job_metadata=metadata(), job_id="AJ_confirm") as ctx:
        assert await claim_at_start(ctx, spec, Claims(dead, POLICIES))
    await dead.aclose()
    [entry] = [r for r in caplog.records if "not confirmed" in r.getMessage()]
    assert vars(entry)["job_id"] == "AJ_confirm" and vars(entry)["error"] == "ConnectionError"
