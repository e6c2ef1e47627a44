"""`python -m agent chat <persona>`: rehearse a persona in the terminal, as text.

The same persona agent, instructions and tools as a live call, with the persona's real LLM
settings (OpenAI, `store=False`, OPENAI_BASE_URL honoured), but no audio, no LiveKit room
and no PortAudio. Nothing is recorded. Type a line and press Enter; an empty line or
Ctrl-D ends the chat; the persona may also hang up (end_call).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from typing import Any

from livekit.agents.voice.events import ConversationItemAddedEvent, FunctionToolsExecutedEvent

from agent.assembly import assemble_call
from agent.dispatch import JobSpec
from agent.providers import build_llm
from agent.worker import load_worker_data
from server.settings import get_settings


def _out(line: str) -> None:
    print(line, flush=True)


async def run_chat(persona_id: str, show_tools: bool, llm_max_retry: int) -> int:
    settings = get_settings()
    if not settings.openai_api_key.strip():
        print("agent chat: OPENAI_API_KEY is not set (see .env.example)", file=sys.stderr)
        return 2
    data = load_worker_data(settings)
    persona = data.catalog.get(persona_id)
    if persona is None:
        known = ", ".join(p.id for p in data.catalog)
        print(f"agent chat: unknown persona {persona_id!r} (known: {known})", file=sys.stderr)
        return 2
    spec = JobSpec(
        persona=persona,
        session_id=f"chat-preview-{int(time.time())}",
        max_duration_s=data.policies.session_duration_s(persona.max_duration_s),
        issued_at=None,
    )
    parts = assemble_call(
        spec,
        data.conversation,
        stt=None,
        llm=build_llm(persona, settings),
        tts=None,
        vad_model=None,
        guards=False,
        llm_max_retry=llm_max_retry,
    )
    speaker = persona.display_name.split(",")[0]
    greeted = asyncio.Event()

    def on_item(ev: ConversationItemAddedEvent) -> None:
        item: Any = ev.item
        if getattr(item, "role", None) == "assistant" and item.text_content:
            _out(f"{speaker}: {item.text_content}")
            greeted.set()

    def on_tools(ev: FunctionToolsExecutedEvent) -> None:
        if not show_tools:
            return
        for call, output in ev.zipped():
            _out(f"  [{call.name} {call.arguments}] -> {output.output if output else ''}")

    parts.session.on("conversation_item_added", on_item)
    parts.session.on("function_tools_executed", on_tools)
    parts.call.begin()
    await parts.session.start(parts.agent, record=False)
    # The greeting is on screen before the first line is read, as on a call.
    await asyncio.wait_for(greeted.wait(), 10)
    loop = asyncio.get_running_loop()
    try:
        while not parts.call.ending:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            text = line.strip()
            if not text:
                break
            _out(f"you: {text}")
            try:
                await parts.session.run(user_input=text)
            except RuntimeError:
                break  # the persona hung up during this turn
    finally:
        if not parts.call.ending:
            await parts.session.aclose()
        await asyncio.wait_for(parts.call.finished.wait(), 15)
    _out(f"(call ended: {parts.call.end_reason}, {parts.call.turns} turns, "
         f"usage {json.dumps(parts.call.usage_fields())})")  # fmt: skip
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent chat", description=__doc__)
    parser.add_argument("persona", help="persona id, e.g. agence-immo-fr")
    parser.add_argument("--show-tools", action="store_true", help="print each tool call")
    parser.add_argument("--llm-retries", type=int, default=1, help="LLM retries per turn")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return asyncio.run(run_chat(args.persona, args.show_tools, args.llm_retries))
