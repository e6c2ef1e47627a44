"""A local OpenAI chat-completions endpoint (`POST /v1/chat/completions`).

Streams exactly what OpenAI streams with `stream=true`: `chat.completion.chunk` events over
SSE (role, content deltas, tool-call deltas with the arguments in fragments, the finish
reason), the usage chunk when `stream_options.include_usage` is set, then `[DONE]`.

Replies come from a `Script` (tests/fakes/llm_script.py, the vocabulary the in-process
scripted LLM shares): the turn chosen by what the caller last said, the step by how many
tool rounds followed it. A reply that fails is OpenAI's 500 `server_error`.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.clock import sleep_until
from tests.fakes.llm_script import Reply, Script, ToolCall


@dataclass
class ChatSettings:
    time_to_first_token_s: float = 0.0
    tokens_per_second: float = 0.0  # 0: all at once


@dataclass
class ChatRequest:
    """One request as received, for assertions."""

    body: dict[str, Any]
    authorization: str | None
    received_wall: float
    user_text: str = ""
    step: int = 0
    turn: str | None = None
    reply: Reply | None = None
    first_token_wall: float | None = None
    last_token_wall: float | None = None  # the reply's last text piece sent
    client_closed: bool = False  # the client went away before the end of the stream

    @property
    def model(self) -> str:
        return str(self.body.get("model"))

    @property
    def store(self) -> object:
        return self.body.get("store", "<absent>")

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or [])

    @property
    def system_prompt(self) -> str:
        return "\n".join(
            content_text(m.get("content"))
            for m in self.messages
            if m.get("role") in ("system", "developer")
        )

    @property
    def tools(self) -> list[str]:
        return [t["function"]["name"] for t in self.body.get("tools") or [] if "function" in t]

    @property
    def tool_schemas(self) -> dict[str, dict[str, Any]]:
        return {
            t["function"]["name"]: t["function"]
            for t in self.body.get("tools") or []
            if "function" in t
        }


def content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


# OpenAI's words when it fails on its side
OUTAGE = "The server had an error while processing your request. Sorry about that!"


def _error(
    status: int, message: str, *, kind: str, code: str | None = None, param: str | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": param, "code": code}},
        status=status,
    )


def token_pieces(text: str) -> list[str]:
    # word-sized pieces with their leading space, like a BPE stream looks from outside
    return re.findall(r"\s*\S+", text) or ([text] if text else [])


def _fragments(arguments: str, size: int = 8) -> list[str]:
    return [arguments[i : i + size] for i in range(0, len(arguments), size)] or [""]


def _position(messages: list[dict[str, Any]]) -> tuple[str, int]:
    """The caller's latest words and how many tool rounds followed them."""
    step = 0
    for message in reversed(messages):
        role = message.get("role")
        if role == "user":
            return content_text(message.get("content")), step
        if role == "assistant" and message.get("tool_calls"):
            step += 1
    return "", step


class OpenAIChatFake:
    def __init__(self, script: Script | None = None, settings: ChatSettings | None = None) -> None:
        self.script = script or Script()
        self.settings = settings or ChatSettings()
        self.requests: list[ChatRequest] = []
        self.errors: list[str] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization")
        if not auth or not auth.startswith("Bearer ") or len(auth) < 12:
            return _error(
                401,
                "Incorrect API key provided.",
                kind="invalid_request_error",
                code="invalid_api_key",
            )
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(
                400,
                "We could not parse the JSON body of your request.",
                kind="invalid_request_error",
            )
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return _error(
                400,
                "you must provide a model parameter",
                kind="invalid_request_error",
                param="model",
            )
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(
                400,
                "'messages' must be a non-empty array",
                kind="invalid_request_error",
                param="messages",
            )

        record = ChatRequest(body=body, authorization=auth, received_wall=time.monotonic())
        self.requests.append(record)
        record.user_text, record.step = _position(messages)
        turn, reply = self.script.reply_for(record.user_text, record.step)
        record.turn = turn.user_says if turn else None
        if reply is None:
            problem = f"no scripted reply for {record.user_text!r} at step {record.step}"
            self.errors.append(problem)
            return _error(500, problem, kind="server_error")
        unoffered = [tool.name for tool in reply.tools if tool.name not in record.tools]
        if unoffered:
            problem = f"script calls {unoffered} but the request offers {record.tools}"
            self.errors.append(problem)
            return _error(500, problem, kind="server_error")
        record.reply = reply
        if reply.fail:
            return _error(500, OUTAGE, kind="server_error")

        if body.get("stream"):
            response = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream; charset=utf-8",
                    "Cache-Control": "no-cache",
                }
            )
            try:
                await self._stream(request, response, record, reply)
            except ConnectionResetError:
                # the client hung up mid-stream (a cancelled preemptive generation)
                record.client_closed = True
            return response
        return await self._complete(record, reply)

    def _usage(self, record: ChatRequest, completion_tokens: int) -> dict[str, Any]:
        prompt_chars = len(json.dumps(record.body.get("messages"))) + len(
            json.dumps(record.body.get("tools") or [])
        )
        prompt_tokens = max(1, prompt_chars // 4)
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    async def _complete(self, record: ChatRequest, reply: Reply) -> web.Response:
        await sleep_until(record.received_wall + self.settings.time_to_first_token_s)
        message: dict[str, Any] = {"role": "assistant", "content": reply.say or None}
        message["refusal"] = None
        count = len(token_pieces(reply.say))
        finish = "stop"
        if reply.tools:
            message["tool_calls"] = [self._tool_call(tool) for tool in reply.tools]
            finish = "tool_calls"
            count += sum(len(json.dumps(tool.arguments)) // 4 for tool in reply.tools)
        return web.json_response(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": record.model,
                "choices": [
                    {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
                ],
                "usage": self._usage(record, count),
                "service_tier": "default",
                "system_fingerprint": "fp_local_fake",
            }
        )

    @staticmethod
    def _tool_call(tool: ToolCall) -> dict[str, Any]:
        return {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": tool.name, "arguments": json.dumps(tool.arguments)},
        }

    async def _stream(
        self, request: web.Request, response: web.StreamResponse, record: ChatRequest, reply: Reply
    ) -> None:
        await response.prepare(request)
        include_usage = bool((record.body.get("stream_options") or {}).get("include_usage"))
        chunk_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())

        async def send(
            delta: dict[str, Any] | None,
            finish: str | None = None,
            usage: dict[str, Any] | None = None,
        ) -> None:
            chunk: dict[str, Any] = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": record.model,
                "service_tier": "default",
                "system_fingerprint": "fp_local_fake",
                "choices": []
                if delta is None
                else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                chunk["usage"] = usage
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        gap = 1 / self.settings.tokens_per_second if self.settings.tokens_per_second > 0 else 0.0
        # token i is due at first token + i * gap (tests/fakes/clock.py says why)
        due = record.received_wall + self.settings.time_to_first_token_s
        await sleep_until(due)
        record.first_token_wall = time.monotonic()
        pieces = token_pieces(reply.say)
        await send({"role": "assistant", "content": "", "refusal": None})
        for index, piece in enumerate(pieces):
            if index and gap:  # tokens are spaced; nothing waits after the last one
                due += gap
                await sleep_until(due)
            await send({"content": piece})
        record.last_token_wall = time.monotonic()
        count = len(pieces)
        for index, tool in enumerate(reply.tools):
            call = self._tool_call(tool)
            await send(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": tool.name, "arguments": ""},
                        }
                    ]
                }
            )
            for fragment in _fragments(call["function"]["arguments"]):
                if gap:
                    due += gap
                    await sleep_until(due)
                await send({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
                count += 1
        await send({}, "tool_calls" if reply.tools else "stop")
        if include_usage:
            await send(None, usage=self._usage(record, count))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
