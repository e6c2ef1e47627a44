"""The session record a call leaves in real Redis: start and end fields, TTL untouched,
slot released, unused minutes refunded; Redis down during the call delays the record
but does not lose it; and nothing of the conversation is ever written."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from agent.recording import END_FIELDS, START_FIELDS, Backoff, RecordOutbox, SessionRecorder
from policies.admission import Admission, Admitted
from policies.claim import CLAIM_FIELDS, Claims
from redisdb import keys
from redisdb.connection import connect
from sessions.store import SessionStore
from tests.agent.support import POLICIES, finished, running_call, spec_for
from tests.fakes.llm_script import Reply, Script, ToolCall, Turn

VISITOR = "0123456789abcdef0123456789abcdef"
FAST_RETRY = Backoff(initial_s=0.05, max_s=0.2)
# Everything the caller and the agent say in these calls: none of it may reach Redis.
CONVERSATION_TEXT = ["Je cherche un trois pièces", "Jean Dupont", "06 12 34 56 78",
                     "Rappelez-moi demain", "Votre message est noté", "Au revoir Jean"]  # fmt: skip


async def admit(redis, session_id: str, persona_id: str) -> Admitted:
    persona = spec_for(persona_id).persona
    duration = POLICIES.session_duration_s(persona.max_duration_s)
    decision = await Admission(redis, POLICIES).admit(
        visitor=VISITOR,
        session_id=session_id,
        persona=persona_id,
        duration_s=duration,
        record={"session_id": session_id, "persona": persona_id, "visitor": VISITOR,
                "language": persona.language, "max_duration_s": str(duration),
                "status": "issued"},
    )  # fmt: skip
    assert isinstance(decision, Admitted)
    return decision


def conversation_script() -> Script:
    message = {"name": "Jean Dupont", "phone": "06 12 34 56 78",
               "subject": "Rappelez-moi demain", "department": "syndic"}  # fmt: skip
    return Script(
        Turn("trois pièces", Reply(tools=(ToolCall("take_message", message),)),
             Reply("Votre message est noté.")),
        Turn("merci", Reply("Au revoir Jean.", tools=(ToolCall("end_call"),))),
    )  # fmt: skip


async def run_call(redis, session_id: str, issued_at: float, outbox: RecordOutbox):
    """The call as the worker runs it once it has claimed the session."""
    recorder = SessionRecorder(session_id, SessionStore(redis), Admission(redis, POLICIES), outbox)
    spec = spec_for("agence-immo-fr", session_id=session_id, issued_at=issued_at)
    async with running_call("agence-immo-fr", conversation_script(), spec=spec,
                            recorder=recorder) as (parts, scripted):  # fmt: skip
        await parts.session.run(user_input="Je cherche un trois pièces")
        await parts.session.run(user_input="merci, au revoir")
        await finished(parts)
    assert scripted.errors == []
    return parts


def assert_no_conversation_in(client: Any) -> None:
    for key in client.scan_iter(count=500):
        kind = client.type(key).decode()
        if kind == "hash":
            values = [v for pair in client.hgetall(key).items() for v in pair]
        elif kind == "string":
            values = [key, client.get(key)]
        elif kind == "set":
            values = [key, *client.smembers(key)]
        elif kind == "zset":
            values = [key, *client.zrange(key, 0, -1)]
        else:
            values = [key]
        blob = b" ".join(v if isinstance(v, bytes) else str(v).encode() for v in values)
        text = blob.decode(errors="replace")
        for phrase in CONVERSATION_TEXT:
            assert phrase not in text, f"{phrase!r} found in {key!r}"
        assert client.ttl(key) > 0, f"{key!r} has no TTL"


async def test_call_completes_its_record_releases_the_slot_and_refunds(redis_url, redis_client):
    redis = connect(redis_url)
    session_id = "rec-session-0001"
    decision = await admit(redis, session_id, "agence-immo-fr")
    ttl_before = redis_client.ttl(keys.session(session_id))
    reserved = int(redis_client.hget(keys.session(session_id), "reserved_s"))
    day = redis_client.hget(keys.session(session_id), "day").decode()
    assert redis_client.zscore(keys.global_active(), session_id) is not None
    outbox = RecordOutbox(backoff=FAST_RETRY)
    started = time.time()
    assert (await Claims(redis, POLICIES).claim(session_id, "AJ_rec1")).ours
    parts = await run_call(redis, session_id, decision.issued_at - 1.5, outbox)
    assert await outbox.flush(5)

    record = {k.decode(): v.decode() for k, v in
              redis_client.hgetall(keys.session(session_id)).items()}  # fmt: skip
    # Exactly what admission, the claim, the call and the release write; nothing else.
    minted = {"session_id", "persona", "visitor", "language", "max_duration_s", "status",
              "issued_at", "lease_expires_at", "day", "reserved_s"}  # fmt: skip
    released = {"released_at", "used_s", "refunded_s", "release_reason"}
    assert set(record) == (
        minted | set(CLAIM_FIELDS) | set(START_FIELDS) | set(END_FIELDS) | released
    )
    assert record["status"] == "ended" and record["end_reason"] == "end_call"
    assert record["release_reason"] == "end_call" and record["claimed_by"] == "AJ_rec1"
    assert started - 1 <= float(record["started_at"]) <= float(record["ended_at"]) <= time.time()
    assert 1.4 <= float(record["join_delay_s"]) < 10  # issued 1.5 s before the call began
    assert float(record["duration_s"]) == pytest.approx(
        float(record["ended_at"]) - float(record["started_at"]), abs=0.1)  # fmt: skip
    assert record["turns"] == "2"
    assert int(record["llm_prompt_tokens"]) == 300  # three LLM requests of 100 prompt tokens
    assert int(record["llm_completion_tokens"]) > 0
    assert record["stt_audio_s"] == "0.0" and record["tts_chars"] == "0"  # text-only call
    assert record["connection_quality"] == "unknown" and record["reconnects"] == "0"
    assert record == {**record, **parts.call.record}  # exactly what the call computed

    # TTL from the policy, not extended by the updates; slot back; minutes refunded.
    ttl_after = redis_client.ttl(keys.session(session_id))
    assert ttl_before - 10 <= ttl_after <= ttl_before <= POLICIES.retention.session_ttl_s
    assert redis_client.zscore(keys.global_active(), session_id) is None
    assert redis_client.zscore(keys.visitor_active(VISITOR), session_id) is None
    refunded = int(record["refunded_s"])
    assert refunded == reserved - int(record["used_s"]) and refunded >= reserved - 5
    assert int(redis_client.get(f"{keys.PREFIX}gm:{day}")) == reserved - refunded
    assert int(redis_client.get(f"{keys.PREFIX}vm:{VISITOR}:{day}")) == reserved - refunded
    assert_no_conversation_in(redis_client)
    await outbox.aclose()
    await redis.aclose()


async def test_a_second_end_changes_nothing(redis_url, redis_client):
    redis = connect(redis_url)
    session_id = "rec-session-0002"
    await admit(redis, session_id, "realty-desk-en")
    outbox = RecordOutbox(backoff=FAST_RETRY)
    recorder = SessionRecorder(session_id, SessionStore(redis), Admission(redis, POLICIES), outbox)
    recorder.ended(used_s=30, reason="silence", fields={"status": "ended", "end_reason": "silence"})
    recorder.ended(used_s=90, reason="error", fields={"status": "ended", "end_reason": "error"})
    assert await outbox.flush(5)
    record = redis_client.hgetall(keys.session(session_id))
    assert record[b"end_reason"] == b"silence" and record[b"used_s"] == b"30"
    with pytest.raises(ValueError, match="transcript"):
        recorder.ended(used_s=1, reason="end_call", fields={"transcript": "hello"})
    await outbox.aclose()
    await redis.aclose()


async def test_late_worker_record_completes_a_session_ops_closed(redis_url, redis_client):
    """The webhook closed the session as abandoned while the worker's record waited for
    Redis: slot and refund stay as ops settled them, the call's own figures still land."""
    redis = connect(redis_url)
    session_id = "rec-session-0003"
    await admit(redis, session_id, "agence-immo-fr")
    admission = Admission(redis, POLICIES)
    first = await admission.release(session_id, 40, "abandoned", {"status": "abandoned"})
    assert first.released
    refunded = redis_client.hget(keys.session(session_id), "refunded_s")
    outbox = RecordOutbox(backoff=FAST_RETRY)
    recorder = SessionRecorder(session_id, SessionStore(redis), admission, outbox)
    recorder.ended(used_s=42, reason="end_call",
                   fields={"status": "ended", "end_reason": "end_call", "turns": "3"})  # fmt: skip
    assert await outbox.flush(5)
    record = redis_client.hgetall(keys.session(session_id))
    assert record[b"status"] == b"ended" and record[b"end_reason"] == b"end_call"
    assert record[b"turns"] == b"3"
    assert record[b"release_reason"] == b"abandoned" and record[b"refunded_s"] == refunded
    await outbox.aclose()
    await redis.aclose()


async def test_record_survives_redis_down_during_the_call(own_redis):
    client = own_redis.client()
    redis = connect(own_redis.url, timeout_s=0.2)
    session_id = "rec-session-down1"
    decision = await admit(redis, session_id, "agence-immo-fr")
    assert (await Claims(redis, POLICIES).claim(session_id, "AJ_down1")).ours
    # Keep the admission on disk so the restarted server has it (the tests' Redis persists
    # nothing by itself), then take Redis away for the whole call.
    client.save()
    own_redis.stop()
    outbox = RecordOutbox(backoff=FAST_RETRY)
    parts = await run_call(redis, session_id, decision.issued_at, outbox)
    assert parts.call.end_reason == "end_call"  # the call went on without Redis
    assert outbox.pending == 2  # start and end, waiting in order
    assert not await outbox.flush(0.3)

    own_redis.start()
    assert await outbox.flush(10)
    record = {k.decode(): v.decode() for k, v in
              client.hgetall(keys.session(session_id)).items()}  # fmt: skip
    # Delivered in order: the start first, then the end (a start after the end would find
    # the record closed and write nothing).
    assert record["status"] == "ended" and record["end_reason"] == "end_call"
    assert record["started_at"] == f"{parts.call.started_at:.3f}"
    for field in (*START_FIELDS, *END_FIELDS):
        assert field in record, field
    assert client.zscore(keys.global_active(), session_id) is None
    assert 0 < client.ttl(keys.session(session_id)) <= POLICIES.retention.session_ttl_s
    assert_no_conversation_in(client)
    await outbox.aclose()
    await redis.aclose()
    client.close()


async def test_outbox_is_bounded_and_keeps_order():
    order: list[str] = []
    failing = True

    def write(name: str):
        async def run() -> None:
            if failing:
                raise ConnectionError("redis down")
            order.append(name)

        return run

    outbox = RecordOutbox(max_pending=3, backoff=FAST_RETRY)
    for name in ("a", "b", "c", "d"):
        outbox.submit(name, write(name))
    await asyncio.sleep(0.1)
    assert outbox.pending == 3  # "a" was dropped (logged) to keep the bound
    failing = False
    assert await outbox.flush(2)
    assert order == ["b", "c", "d"]
    await outbox.aclose()


async def test_a_late_start_never_reopens_an_ended_record(redis_url, redis_client):
    """A start write that arrives after the session closed (retried past a Redis outage, or
    a replayed job) leaves the record as it is: no status, no start fields."""
    redis = connect(redis_url)
    session_id = "rec-session-0004"
    await admit(redis, session_id, "realty-desk-en")
    assert (await Claims(redis, POLICIES).claim(session_id, "AJ_rec4")).ours
    outbox = RecordOutbox(backoff=FAST_RETRY)
    recorder = SessionRecorder(session_id, SessionStore(redis), Admission(redis, POLICIES), outbox)
    recorder.ended(used_s=12, reason="user_hangup",
                   fields={"status": "ended", "end_reason": "user_hangup"})  # fmt: skip
    assert await outbox.flush(5)
    closed = redis_client.hgetall(keys.session(session_id))
    recorder.started(started_at=time.time(), join_delay_s=0.5)
    assert await outbox.flush(5)
    assert redis_client.hgetall(keys.session(session_id)) == closed
    assert closed[b"status"] == b"ended" and b"started_at" not in closed
    await outbox.aclose()
    await redis.aclose()
