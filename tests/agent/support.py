"""Test support for the agent worker: a scripted `llm.LLM`, call specs and calls run
in-process, each session closed however its test ends.

The scripted LLM is a real `livekit.agents.llm.LLM`: AgentSession drives it exactly as it
drives the OpenAI plugin (streamed ChatChunks, tool calls, a usage chunk per request), so
the persona agent, its tools, the guards and the recording run unchanged. It answers from
a `Script` (tests/fakes/llm_script.py), the vocabulary the OpenAI fake speaks too.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

from livekit.agents import APIConnectionError, APIConnectOptions, llm
from livekit.agents.llm import ChatChunk, ChoiceDelta, CompletionUsage, FunctionToolCall
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

from agent.assembly import CallParts, assemble_call
from agent.conversation import GuardTimings, default_conversation
from agent.dispatch import JobSpec
from agents_catalog import load_catalog
from policies import load_policies
from tests.fakes.llm_script import Reply, Script

CATALOG = load_catalog()
POLICIES = load_policies()
TODAY = date(2026, 11, 27)  # a Friday: slot dates in tests are fixed

# Guards short enough for tests that still let a scripted turn finish first.
FAST = GuardTimings(max_duration_warning_s=0.4, user_away_timeout_s=0.3, hangup_grace_s=2.0)
RELAXED = GuardTimings(max_duration_warning_s=0, user_away_timeout_s=60, hangup_grace_s=2.0)
# For calls in which the model is never asked: any request is in `ScriptedLLM.errors`.
UNSCRIPTED = Script()


@dataclass
class Request:
    instructions: str
    tools: list[str]
    user_text: str
    step: int


def _position(chat_ctx: llm.ChatContext) -> tuple[str, int]:
    step = 0
    for item in reversed(chat_ctx.items):
        if item.type == "message" and item.role == "user":
            return item.text_content or "", step
        if item.type == "function_call_output":
            step = step + 1 if _new_round(chat_ctx, item) else step
    return "", step


def _new_round(chat_ctx: llm.ChatContext, output: Any) -> bool:
    # Count a round once per LLM response, not once per tool output in it.
    items = chat_ctx.items
    index = items.index(output)
    return index + 1 >= len(items) or items[index + 1].type != "function_call_output"


class ScriptedLLM(llm.LLM[Any]):
    def __init__(self, script: Script, *, prompt_tokens: int = 100) -> None:
        super().__init__()
        self.script = script
        self.prompt_tokens = prompt_tokens
        self.requests: list[Request] = []
        self.errors: list[str] = []

    @property
    def model(self) -> str:
        return "scripted"

    @property
    def provider(self) -> str:
        return "tests"

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        return _ScriptedStream(
            self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options
        )


class _ScriptedStream(llm.LLMStream):
    async def _run(self) -> None:
        scripted: ScriptedLLM = self._llm  # type: ignore[assignment]
        user_text, step = _position(self._chat_ctx)
        instructions = "\n".join(
            m.text_content or ""
            for m in self._chat_ctx.messages()
            if m.role in ("system", "developer")
        )
        names = [
            t.info.name
            for t in self._tools
            if isinstance(t, llm.FunctionTool | llm.RawFunctionTool)
        ]
        scripted.requests.append(Request(instructions, names, user_text, step))
        _turn, reply = scripted.script.reply_for(user_text, step)
        if reply is None:
            scripted.errors.append(f"no scripted reply for {user_text!r} at step {step}")
            reply = Reply(say="(no script)")
        if reply.fail:
            raise APIConnectionError("scripted provider failure")
        request_id = f"req-{uuid.uuid4().hex[:8]}"
        completion = 0
        for word in reply.say.split(" ") if reply.say else []:
            completion += 1
            self._event_ch.send_nowait(
                ChatChunk(id=request_id, delta=ChoiceDelta(role="assistant", content=word + " "))
            )
        calls = [
            FunctionToolCall(name=t.name, arguments=json.dumps(t.arguments),
                             call_id=f"call_{uuid.uuid4().hex[:10]}")
            for t in reply.tools
        ]  # fmt: skip
        if calls:
            completion += len(calls) * 5
            self._event_ch.send_nowait(
                ChatChunk(id=request_id, delta=ChoiceDelta(role="assistant", tool_calls=calls))
            )
        self._event_ch.send_nowait(
            ChatChunk(
                id=request_id,
                usage=CompletionUsage(
                    completion_tokens=completion,
                    prompt_tokens=scripted.prompt_tokens,
                    total_tokens=scripted.prompt_tokens + completion,
                ),
            )
        )


def spec_for(persona_id: str, *, session_id: str = "test-session-0001", max_duration_s: int = 300,
             issued_at: float | None = None) -> JobSpec:  # fmt: skip
    persona = CATALOG.get(persona_id)
    assert persona is not None
    return JobSpec(persona=persona, session_id=session_id, max_duration_s=max_duration_s,
                   issued_at=issued_at)  # fmt: skip


# --- running a call in-process (text only: no room, no audio) ---------------------------


@asynccontextmanager
async def running_session(parts: CallParts) -> AsyncIterator[CallParts]:
    """The call's session started as the worker starts it (text only), and closed however
    the test leaves the block."""
    parts.call.begin()
    await parts.session.start(parts.agent, record=False)
    async with parts.session:  # closes it
        yield parts


def assembled_call(
    persona_id: str,
    script: Script = UNSCRIPTED,
    *,
    timings: GuardTimings = RELAXED,
    spec: JobSpec | None = None,
    recorder: Any = None,
) -> tuple[CallParts, ScriptedLLM]:
    """A call as the worker assembles it, not started, answered by `script`."""
    scripted = ScriptedLLM(script)
    parts = assemble_call(
        spec or spec_for(persona_id),
        default_conversation(),
        stt=None,
        llm=scripted,
        tts=None,
        vad_model=None,
        timings=timings,
        recorder=recorder,
        today=TODAY,
        llm_max_retry=0,
    )
    return parts, scripted


@asynccontextmanager
async def running_call(
    persona_id: str,
    script: Script = UNSCRIPTED,
    *,
    timings: GuardTimings = RELAXED,
    spec: JobSpec | None = None,
    recorder: Any = None,
) -> AsyncIterator[tuple[Any, ScriptedLLM]]:
    """`assembled_call` running, its greeting said. (The parts as Any: mypy cannot infer
    the output type of `session.run()`, which the tests call with none.)"""
    parts, scripted = assembled_call(
        persona_id, script, timings=timings, spec=spec, recorder=recorder
    )
    async with running_session(parts):
        for _ in range(200):
            if said(parts):
                break
            await asyncio.sleep(0.01)
        yield parts, scripted


def said(parts: Any) -> list[str]:
    """What the agent said so far, in order."""
    return [
        m.text_content.strip()
        for m in parts.session.history.messages()
        if m.role == "assistant" and m.text_content
    ]


def tool_outputs(result: Any, name: str) -> list[dict[str, Any]]:
    """The JSON answers of the tool `name` in a run's events."""
    found = []
    for event in result.events:
        if event.type == "function_call_output" and event.item.name == name:
            found.append(json.loads(event.item.output))
    return found


async def finished(parts: Any, timeout: float = 5.0) -> None:
    await asyncio.wait_for(parts.call.finished.wait(), timeout)
