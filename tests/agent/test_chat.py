"""`python -m agent chat <persona>` in a subprocess, talking to a local OpenAI
chat-completions fake (SSE streaming, tool calls, usage) through OPENAI_BASE_URL."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from tests.agent.support import CATALOG
from tests.fakes.llm_script import Reply, Script, ToolCall, Turn
from tests.fakes.server import running_vendor_fakes
from tests.support import ROOT

SEARCH = {"transaction": "sale", "kind": None, "area": "Croix-Rousse", "max_price_eur": 400000,
          "min_bedrooms": None, "min_rooms": 3}  # fmt: skip
ANSWER = ("J'ai un trois pièces de canut à la Croix-Rousse, soixante-huit mètres carrés, "
          "à trois cent soixante-cinq mille euros.")  # fmt: skip
GOODBYE = "Merci de votre appel, au revoir !"


async def run_chat(env: dict[str, str], persona: str, lines: list[str], *extra: str):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "chat", persona, *extra, cwd=ROOT, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdin = "".join(line + "\n" for line in lines).encode()
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_chat_preview_runs_a_scripted_exchange_end_to_end():
    script = Script(
        Turn("trois pièces", Reply(tools=(ToolCall("find_listings", SEARCH),)), Reply(ANSWER)),
        Turn("au revoir", Reply(GOODBYE, tools=(ToolCall("end_call"),))),
    )
    async with running_vendor_fakes(chat_script=script) as fakes:
        env = {**os.environ, **fakes.env()}
        code, out, err = await run_chat(
            env, "agence-immo-fr",
            ["Je cherche un trois pièces à la Croix-Rousse", "Merci, au revoir", "ignored"],
            "--show-tools", "--llm-retries", "0",
        )  # fmt: skip
    assert code == 0, err
    persona = CATALOG.get("agence-immo-fr")
    assert persona is not None
    lines = out.splitlines()
    assert lines[0] == f"Camille: {persona.greeting}"
    assert lines[1] == "you: Je cherche un trois pièces à la Croix-Rousse"
    assert lines[2].startswith("  [find_listings ") and '"LYO-101"' in lines[2]
    assert lines[3] == f"Camille: {ANSWER}"
    assert lines[4] == "you: Merci, au revoir"
    assert lines[5] == f"Camille: {GOODBYE}"  # one goodbye: the model's
    assert lines[6].startswith("  [end_call ")
    assert lines[7].startswith("(call ended: end_call, 2 turns, usage ")
    usage = json.loads(lines[7].split("usage ", 1)[1].rstrip(")"))
    assert int(usage["llm_prompt_tokens"]) > 0 and int(usage["llm_completion_tokens"]) > 0
    assert "ignored" not in out  # the persona had hung up
    assert fakes.chat.errors == []

    requests = fakes.chat.requests
    assert len(requests) == 3  # search, answer, goodbye + end_call
    for request in requests:
        assert request.body["stream"] is True
        assert request.store is False  # privacy: never stored by OpenAI
        assert request.model == persona.llm.model
        assert request.body["temperature"] == persona.llm.temperature
        assert request.system_prompt.startswith(persona.instructions.strip()[:200])
        assert "Cadre de la démonstration." in request.system_prompt
        assert sorted(request.tools) == sorted(persona.tools)
        assert request.authorization == "Bearer sk-local-fake-key"
    schema = requests[0].tool_schemas["transfer_to_human"]["parameters"]
    assert schema["properties"]["department"]["enum"] == persona.demo_data.transfer_departments


async def test_chat_preview_for_an_unknown_persona_or_without_a_key():
    env = {**os.environ, "OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    code, _out, err = await run_chat(env, "nobody-here", [])
    assert code == 2 and "unknown persona 'nobody-here'" in err and "agence-immo-fr" in err
    code, _out, err = await run_chat({**env, "OPENAI_API_KEY": ""}, "agence-immo-fr", [])
    assert code == 2 and "OPENAI_API_KEY" in err
