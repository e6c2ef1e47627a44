"""What the worker sends the page, through the real path: a real livekit-server dispatches
`python -m agent start` (real Deepgram and OpenAI plugins against the vendor fakes, whose
scripted conversation is tests/e2e/test_call.py's), and the visitor is LiveKit's Python SDK
speaking espeak-ng lines (tests/e2e/page_visitor.py).

- After each reply that answered the visitor, an `ocf.latency` message; at the end_call,
  the `ocf.recap` with the viewing the tool booked, before the agent leaves. Neither leaves
  a trace in Redis or in any process's log.
- A line said before the agent joined, carried only by the pre-connect buffer, is heard
  and answered. Everything runs inside scripts/offline.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis

from tests.e2e.livekit_caller import request_token
from tests.e2e.livekit_stack import Stack, running_stack
from tests.e2e.page_visitor import PageVisitor
from tests.e2e.test_call import SCENARIOS
from tests.voice.test_calls import _redis_text, _with_dates

pytestmark = pytest.mark.e2e

SCENARIO = SCENARIOS["en"]
CALL = _with_dates(SCENARIO.call)
# The listing and slot the scripted book_visit asks for.
BOOKED = {key: CALL.book[key] for key in ("listing_ref", "date", "time", "name", "phone")}


def _tool_outputs(stack: Stack, name: str) -> list[dict[str, Any]]:
    assert stack.fakes is not None
    outputs = stack.fakes.get("/fake/tool_outputs")
    return [json.loads(o["output"]) for o in outputs if o["name"] == name]


def _words(text: str) -> str:
    return " ".join(text.split()[:4])


async def test_latency_after_each_reply_and_the_recap_before_the_agent_leaves(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with running_stack(
        redis_url, fakes_config=SCENARIO.fakes_config(), name="page-signals"
    ) as stack:
        visitor = PageVisitor()
        await visitor.enter(request_token(stack.base_url, CALL.persona))
        try:
            await visitor.agent_replied(0.0, 90)  # the greeting, said and done
            for line in (CALL.question, CALL.booking):
                said = visitor.say(line, "en")
                await said.ended.wait()
                assert said.ended_at is not None
                await visitor.agent_replied(said.ended_at, 90)
            visitor.say(CALL.goodbye, "en")
            await visitor.until(lambda: visitor.agent_left_at is not None, 90, "the agent to leave")
            await visitor.until(
                lambda: all(s.closed for s in visitor.received("ocf.recap")), 10, "the recap"
            )
        finally:
            await visitor.leave()
        [booked] = _tool_outputs(stack, "book_visit")
        logs = stack.logs()

    agent = visitor.agent_identity
    assert agent is not None
    # One latency figure per answered line, each after that reply's transcript opened.
    replies = [s for s in visitor.received("lk.transcription", agent)]
    latencies = visitor.received("ocf.latency")
    assert [s.sender for s in latencies] == [agent] * 3
    answered = []
    for message in latencies:
        figure = json.loads(message.text)
        assert set(figure) == {"v", "seconds"} and figure["v"] == 1
        assert 0 < figure["seconds"] < 30
        latest = [s for s in replies if s.opened < message.opened][-1]
        answered.append(latest.text)
    assert [_words(t) for t in answered] == [
        _words(CALL.answer), _words(CALL.confirmation), _words(CALL.farewell)
    ]  # fmt: skip

    # The recap: once, from the agent, before it left (and before it said why it left).
    [recap_stream] = visitor.received("ocf.recap")
    assert recap_stream.sender == agent
    assert recap_stream.closed is not None and visitor.agent_left_at is not None
    assert recap_stream.closed < visitor.agent_left_at
    assert visitor.end_reason_at is not None and recap_stream.opened < visitor.end_reason_at
    recap = json.loads(recap_stream.text)
    assert (recap["v"], recap["lang"], recap["end_reason"]) == (1, "en", "end_call")
    [item] = recap["items"]
    assert booked["status"] == "booked" and item["reference"] == booked["reference"]
    assert {k: item[k] for k in BOOKED} == BOOKED
    assert item["type"] == "viewing" and item["date_text"] == booked["slot"]["said"]

    # Sent, never kept: nothing of it in Redis or in any log (the worker says how many items).
    private = [item["reference"], item["name"], item["phone"], item["text"], item["place"]]
    stored = _redis_text(redis_client)
    for name, text in {**logs, "redis": stored}.items():
        for value in private:
            assert value not in text, (name, value)
    [sent] = [json.loads(line) for line in logs["worker.log"].splitlines()
              if '"recap sent"' in line]  # fmt: skip
    assert sent["items"] == 1
    print(f"latency after each reply: {[json.loads(m.text)['seconds'] for m in latencies]} s")


async def test_what_the_visitor_said_before_the_agent_joined_is_answered(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with running_stack(
        redis_url, fakes_config=SCENARIO.fakes_config(), name="pre-connect"
    ) as stack:
        visitor = PageVisitor()
        buffer = PageVisitor.spoken(CALL.question, "en")
        await visitor.enter(request_token(stack.base_url, CALL.persona), preconnect=buffer)
        try:
            await visitor.until(visitor.preconnect_sent.is_set, 60, "the buffer to be sent")
            # The live microphone only ever carried silence: the agent heard the question
            # from the buffer, transcribed it for the page and answered it.
            question = _words(CALL.question)
            await visitor.until(
                lambda: any(question in s.text for s in visitor.received("lk.transcription")),
                60,
                "the visitor's transcript",
            )
            answer = _words(CALL.answer)
            await visitor.until(
                lambda: any(answer in s.text for s in visitor.received("lk.transcription")),
                60,
                "the answer",
            )
        finally:
            await visitor.leave()
        assert _tool_outputs(stack, "find_listings"), "the question was never answered"
        # The visitor hung up: no recap goes to an empty room.
        assert stack.worker is not None
        for _ in range(100):
            if '"call ended"' in stack.worker.logs():
                break
            time.sleep(0.2)
        worker_log = stack.worker.logs()

    agent_lines = [s.text for s in visitor.received("lk.transcription", visitor.agent_identity)]
    assert any(_words(CALL.answer) in text for text in agent_lines), agent_lines
    assert '"call ended"' in worker_log and '"recap sent"' not in worker_log
    for warning in ("registered after room connection", "timeout waiting for pre-connect",
                    "pre-connect audio buffer is too old"):  # fmt: skip
        assert warning not in worker_log
