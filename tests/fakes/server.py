"""One aiohttp app on 127.0.0.1 hosting the three vendor fakes.

- `http://127.0.0.1:<port>/v1` is an OpenAI base URL (chat completions, audio/speech);
- `ws://127.0.0.1:<port>/v1/listen` is a Deepgram streaming URL.

In-process: `async with running_vendor_fakes(...) as fakes:` (tests, latency bench).
As its own process (so its CPU is not charged to the sessions under test):
`python -m tests.fakes.server --config fakes.json` prints `ready <port>` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.deepgram_listen import DeepgramListenFake, ListenSettings, TranscriptScript
from tests.fakes.llm_script import Script
from tests.fakes.openai_chat import ChatSettings, OpenAIChatFake, content_text
from tests.fakes.openai_speech import OpenAISpeechFake, SpeechSettings


async def serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve an aiohttp app on loopback (port 0: a free one); returns the runner and port.
    No access log: request lines would be noise, and bodies are never logged."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    assert server is not None
    return runner, server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]


class FakeURLs:
    """Where the plugins reach the fakes (their base-URL settings), for either host."""

    host: str
    port: int

    @property
    def openai_base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def deepgram_url(self) -> str:
        return f"ws://{self.host}:{self.port}/v1/listen"


@dataclass
class VendorFakes(FakeURLs):
    chat: OpenAIChatFake = field(default_factory=OpenAIChatFake)
    speech: OpenAISpeechFake = field(default_factory=OpenAISpeechFake)
    listen: DeepgramListenFake = field(default_factory=DeepgramListenFake)
    host: str = "127.0.0.1"
    port: int = 0
    _runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat.handle)
        app.router.add_post("/v1/audio/speech", self.speech.handle)
        app.router.add_get("/v1/listen", self.listen.handle)
        # not a vendor route: lets a benchmark read back the delays actually served
        app.router.add_get("/fake/served", self.served)
        app.router.add_get("/fake/timeline", self.timeline_route)
        app.router.add_get("/fake/tool_outputs", self.tool_outputs_route)
        return app

    def served_delays(self) -> dict[str, list[float]]:
        """Per request, the delay each fake actually served (seconds)."""
        return {
            "stt_final_after_speech_end": [
                u.final_sent_wall - u.end_wall
                for c in self.listen.connections
                for u in c.utterances
                if u.final_sent_wall is not None and u.end_wall is not None
            ],
            "llm_first_token": [
                r.first_token_wall - r.received_wall
                for r in self.chat.requests
                if r.first_token_wall is not None
            ],
            "tts_first_byte": [
                r.first_byte_wall - r.received_wall
                for r in self.speech.requests
                if r.first_byte_wall is not None
            ],
        }

    async def served(self, request: web.Request) -> web.Response:
        return web.json_response(self.served_delays())

    def timeline(self) -> dict[str, list[float]]:
        """When each vendor step happened (time.monotonic(), the same clock in every process
        of this machine), so a benchmark can split a turn's latency into its stages."""
        utterances = [u for c in self.listen.connections for u in c.utterances]
        chats, speeches = self.chat.requests, self.speech.requests
        return {
            "stt_speech_end": [u.end_wall for u in utterances if u.end_wall is not None],
            "stt_final_sent": [u.final_sent_wall for u in utterances if u.final_sent_wall],
            "llm_received": [r.received_wall for r in chats],
            "llm_last_token": [r.last_token_wall for r in chats if r.last_token_wall],
            "tts_received": [r.received_wall for r in speeches],
            "tts_first_byte": [r.first_byte_wall for r in speeches if r.first_byte_wall],
        }

    async def timeline_route(self, request: web.Request) -> web.Response:
        return web.json_response(self.timeline())

    def tool_outputs(self) -> list[dict[str, Any]]:
        """Each tool result the agent sent back to the model, once, in order: what a tool
        really answered in a call driven from outside this process (end-to-end tests)."""
        seen: dict[str, dict[str, Any]] = {}
        for request in self.chat.requests:
            names: dict[str, str] = {}
            for message in request.messages:
                for call in message.get("tool_calls") or []:
                    names[call.get("id", "")] = call.get("function", {}).get("name", "")
                if message.get("role") == "tool":
                    call_id = str(message.get("tool_call_id", ""))
                    content = message.get("content")
                    seen.setdefault(
                        call_id,
                        {"name": names.get(call_id, ""), "output": content_text(content)},
                    )
        return list(seen.values())

    async def tool_outputs_route(self, request: web.Request) -> web.Response:
        return web.json_response(self.tool_outputs())

    async def start(self) -> VendorFakes:
        self._runner, self.port = await serve(self.app(), self.host, self.port)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def env(self) -> dict[str, str]:
        """Environment that points the worker's providers at these fakes."""
        return {
            "OPENAI_BASE_URL": self.openai_base_url,
            "OPENAI_API_KEY": "sk-local-fake-key",
            "DEEPGRAM_BASE_URL": self.deepgram_url,
            "DEEPGRAM_API_KEY": "local-fake-deepgram-key",
        }


@contextlib.asynccontextmanager
async def running_vendor_fakes(
    *,
    chat_script: Script | None = None,
    transcripts: list[str] | None = None,
    cycle_transcripts: bool = False,
    chat: ChatSettings | None = None,
    speech: SpeechSettings | None = None,
    listen: ListenSettings | None = None,
) -> AsyncIterator[VendorFakes]:
    fakes = VendorFakes(
        chat=OpenAIChatFake(chat_script, chat),
        speech=OpenAISpeechFake(speech),
        listen=DeepgramListenFake(
            listen, TranscriptScript(transcripts or [], cycle=cycle_transcripts)
        ),
    )
    await fakes.start()
    try:
        yield fakes
    finally:
        await fakes.stop()


# -- separate-process mode --------------------------------------------------------------


@dataclass
class RemoteFakes(FakeURLs):
    """The fakes served by their own process (`spawn_vendor_fakes`)."""

    port: int
    host: str = "127.0.0.1"

    async def _get(self, path: str) -> dict[str, list[float]]:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{self.host}:{self.port}{path}") as res:
                data: dict[str, list[float]] = await res.json()
                return data

    async def served_delays(self) -> dict[str, list[float]]:
        return await self._get("/fake/served")

    async def timeline(self) -> dict[str, list[float]]:
        return await self._get("/fake/timeline")


@contextlib.asynccontextmanager
async def spawn_vendor_fakes(config: dict[str, Any]) -> AsyncIterator[RemoteFakes]:
    """The fakes in a child process, so their CPU is not charged to what is measured."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(config, handle)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fakes.server", "--config", handle.name,
        cwd=Path(__file__).resolve().parents[2],
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not line.startswith(b"ready "):
            raise RuntimeError(f"fake vendor server did not start: {line!r}")
        yield RemoteFakes(port=int(line.split()[1]))
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
        os.unlink(handle.name)


def fakes_from_config(config: dict[str, Any]) -> VendorFakes:
    """Fakes described by JSON (what the benchmarks and the end-to-end stacks hand to a
    fake-server process); its `turns` and `fallback` are a `Script.to_json()`."""
    script = Script.from_json({key: config[key] for key in ("turns", "fallback") if key in config})
    return VendorFakes(
        chat=OpenAIChatFake(script, ChatSettings(**config.get("chat", {}))),
        speech=OpenAISpeechFake(SpeechSettings(**config.get("speech", {}))),
        listen=DeepgramListenFake(
            ListenSettings(**config.get("listen", {})),
            TranscriptScript(config.get("transcripts", []), cycle=config.get("cycle", False)),
        ),
        port=int(config.get("port", 0)),
    )


async def _serve(config: dict[str, Any]) -> None:
    fakes = await fakes_from_config(config).start()
    print(f"ready {fakes.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await fakes.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--config", type=Path, required=True, help="JSON file (see fakes_from_config)"
    )
    args = parser.parse_args(argv)
    asyncio.run(_serve(json.loads(args.config.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
