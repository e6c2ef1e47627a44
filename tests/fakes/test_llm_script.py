"""One script, two models: the in-process ScriptedLLM and the real OpenAI plugin against
the chat fake answer the same `Script` (tests/fakes/llm_script.py) with the same words and
tool calls, turn by turn and step by step, and fail where it says so. Its JSON form (the
fakes' config) is the same objects and refuses what is not a script."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from livekit.agents import APIConnectOptions, APIError, function_tool
from livekit.agents import llm as lk_llm
from livekit.plugins import openai as lk_openai

from tests.agent.support import ScriptedLLM
from tests.fakes.llm_script import Reply, Script, ScriptError, ToolCall, Turn
from tests.fakes.server import fakes_from_config, running_vendor_fakes

SCRIPT = Script(
    Turn("book", Reply("Let me look at Monday.",
                       tools=(ToolCall("find_slot", {"day": "monday"}),
                              ToolCall("book_visit", {"slot_id": "VW-01", "name": "Ada"}))),
         Reply("Booked for Monday at ten.")),
    Turn("outage", Reply(fail=True)),
    fallback=Reply("Sorry, could you say that again?"),
)  # fmt: skip
NO_RETRY = APIConnectOptions(max_retry=0)


@function_tool
async def find_slot(day: str) -> str:
    """Find a free slot."""
    return day


@function_tool
async def book_visit(slot_id: str, name: str) -> str:
    """Book a slot."""
    return slot_id


TOOLS: list[lk_llm.Tool] = [find_slot, book_visit]
Answer = tuple[str, list[tuple[str, dict[str, Any]]]]


async def answer(model: lk_llm.LLM[Any], ctx: lk_llm.ChatContext) -> Answer:
    """What the model says (words only) and the tools it calls; the calls and their
    outputs go into `ctx` as AgentSession puts them, so the next request is the next step."""
    async with model.chat(chat_ctx=ctx, tools=TOOLS, conn_options=NO_RETRY) as stream:
        chunks = [chunk async for chunk in stream]
    words = " ".join("".join(c.delta.content or "" for c in chunks if c.delta).split())
    calls = [call for c in chunks if c.delta for call in c.delta.tool_calls]
    for index, call in enumerate(calls):
        ctx.insert(lk_llm.FunctionCall(id=f"{chunks[0].id}/fnc_{index}", call_id=call.call_id,
                                       name=call.name, arguments=call.arguments))  # fmt: skip
    for call in calls:
        ctx.insert(lk_llm.FunctionCallOutput(call_id=call.call_id, name=call.name,
                                             output="ok", is_error=False))  # fmt: skip
    return words, [(call.name, json.loads(call.arguments)) for call in calls]


async def conversation(model: lk_llm.LLM[Any]) -> list[Answer | str]:
    """The script's conversation: a booking in two steps, a line no turn expects, an outage."""
    ctx = lk_llm.ChatContext()
    ctx.add_message(role="system", content="You book viewings.")
    ctx.add_message(role="user", content="Can I BOOK a viewing on Monday?")
    heard: list[Answer | str] = [await answer(model, ctx), await answer(model, ctx)]
    ctx.add_message(role="user", content="Hm?")
    heard.append(await answer(model, ctx))
    ctx.add_message(role="user", content="An outage now")
    with pytest.raises(APIError) as failed:
        await answer(model, ctx)
    heard.append(type(failed.value).__name__)
    return heard


async def test_the_scripted_llm_and_the_openai_fake_answer_one_script_alike():
    scripted = ScriptedLLM(SCRIPT)
    in_process = await conversation(scripted)
    async with running_vendor_fakes(chat_script=SCRIPT) as fakes:
        model = lk_openai.LLM(model="gpt-4.1-mini", base_url=fakes.openai_base_url,
                              api_key="sk-local-fake-key")  # fmt: skip
        over_http = await conversation(model)
        await model.aclose()

    booking = [
        ("Let me look at Monday.",
         [("find_slot", {"day": "monday"}), ("book_visit", {"slot_id": "VW-01", "name": "Ada"})]),
        ("Booked for Monday at ten.", []),
        ("Sorry, could you say that again?", []),
    ]  # fmt: skip
    assert in_process == [*booking, "APIConnectionError"]
    assert over_http == [*booking, "APIStatusError"]  # OpenAI's 500
    assert scripted.errors == [] and fakes.chat.errors == []
    # the same turn and step chosen on both sides, for each request
    assert [(r.user_text, r.step) for r in scripted.requests] == [
        (r.user_text, r.step) for r in fakes.chat.requests
    ]
    assert [r.turn for r in fakes.chat.requests] == ["book", "book", None, "outage"]


def test_reply_for_picks_the_first_turn_said_then_the_step():
    script = Script(Turn("viewing", Reply("a"), Reply("b")), Turn("view", Reply("c")))
    viewing = script.turns[0]
    assert script.reply_for("A VIEWING please", 1) == (viewing, Reply("b"))
    assert script.reply_for("a viewing", 2) == (viewing, None)  # no reply that far
    assert script.reply_for("the view", 0) == (script.turns[1], Reply("c"))
    assert script.reply_for("nothing", 0) == (None, None)
    assert SCRIPT.reply_for("nothing", 3) == (None, SCRIPT.fallback)


def test_the_json_form_is_the_same_objects():
    data = json.loads(json.dumps(SCRIPT.to_json()))
    assert Script.from_json(data) == SCRIPT
    assert data["turns"][0]["replies"][1] == {"say": "Booked for Monday at ten."}
    assert data["turns"][1]["replies"] == [{"fail": True}]
    assert Script.from_json({}) == Script()
    fakes = fakes_from_config({**data, "transcripts": ["one"]})
    assert fakes.chat.script == SCRIPT


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"turns": [{"user_says": "x", "replies": [{"tool": "end_call"}]}]}, "unknown ['tool']"),
        ({"turns": [{"user_says": "x"}]}, "missing ['replies']"),
        ({"turns": [{"user_says": "x", "replies": [{"say": 3}]}]}, "say is a str"),
        ({"turns": [{"user_says": "x", "replies": [{"tools": [{"arguments": {}}]}]}]},
         "missing ['name']"),
        ({"turns": {"user_says": "x"}}, "turns are a list"),
        ({"fallback": "hello"}, "a reply is a JSON object"),
    ],
)  # fmt: skip
def test_what_is_not_a_script_is_refused_with_what_is_wrong(data: Any, words: str):
    with pytest.raises(ScriptError, match=re.escape(words)):
        Script.from_json(data)
    with pytest.raises(ScriptError):
        fakes_from_config(data)
