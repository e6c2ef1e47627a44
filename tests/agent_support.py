"""Test support for the agent worker: a scripted `llm.LLM`, call specs and a quick run loop.

The scripted LLM is a real `livekit.agents.llm.LLM`: AgentSession drives it exactly as it
drives the OpenAI plugin (streamed ChatChunks, tool calls, a usage chunk per request), so
the persona agent, its tools, the guards and the recording run unchanged.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from livekit.agents import APIConnectionError, APIConnectOptions, llm
from livekit.agents.llm import ChatChunk, ChoiceDelta, CompletionUsage, FunctionToolCall
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

from agent.conversation import GuardTimings
from agent.dispatch import JobSpec
from agents_catalog import load_catalog
from policies import load_policies

CATALOG = load_catalog()
POLICIES = load_policies()
TODAY = date(2026, 11, 27)  # a Friday: slot dates in tests are fixed

# Guards short enough for tests that still let a scripted turn finish first.
FAST = GuardTimings(max_duration_warning_s=0.4, user_away_timeout_s=0.3, hangup_grace_s=2.0)
RELAXED = GuardTimings(max_duration_warning_s=0, user_away_timeout_s=60, hangup_grace_s=2.0)


@dataclass(frozen=True)
class Tool:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One LLM response: optional text, then optional tool calls."""

    text: str = ""
    tools: tuple[Tool, ...] = ()
    fail: bool = False  # the provider fails (connection refused) instead of answering


@dataclass(frozen=True)
class Turn:
    """Steps answering a user message containing `user_says` (case-insensitive);
    steps[i] answers the request made after i tool rounds."""

    user_says: str
    steps: tuple[Step, ...]


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
    def __init__(self, turns: list[Turn], *, prompt_tokens: int = 100) -> None:
        super().__init__()
        self.turns = turns
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

    def step_for(self, user_text: str, step: int) -> Step | None:
        said = user_text.casefold()
        for turn in self.turns:
            if turn.user_says.casefold() in said:
                return turn.steps[step] if step < len(turn.steps) else None
        return None


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
        reply = scripted.step_for(user_text, step)
        if reply is None:
            scripted.errors.append(f"no scripted step for {user_text!r} at step {step}")
            reply = Step(text="(no script)")
        if reply.fail:
            raise APIConnectionError("scripted provider failure")
        request_id = f"req-{uuid.uuid4().hex[:8]}"
        completion = 0
        for word in reply.text.split(" ") if reply.text else []:
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


async def start_call(
    persona_id: str,
    turns: list[Turn],
    *,
    timings: GuardTimings = RELAXED,
    spec: JobSpec | None = None,
    recorder: Any = None,
) -> tuple[Any, ScriptedLLM]:
    """A call as the worker assembles it, started, with its greeting said."""
    import asyncio

    from agent.assembly import assemble_call
    from agent.conversation import default_conversation

    scripted = ScriptedLLM(turns)
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
    parts.call.begin()
    await parts.session.start(parts.agent, record=False)
    for _ in range(200):
        if said(parts):
            break
        await asyncio.sleep(0.01)
    return parts, scripted


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
    import asyncio

    await asyncio.wait_for(parts.call.finished.wait(), timeout)
