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
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.fakes.deepgram_listen import DeepgramListenFake, ListenSettings, TranscriptScript
from tests.fakes.openai_chat import (
    CallTool,
    ChatScript,
    ChatSettings,
    ChatTurn,
    OpenAIChatFake,
    Say,
)
from tests.fakes.openai_speech import OpenAISpeechFake, SpeechSettings


@dataclass
class VendorFakes:
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
        return app

    async def start(self) -> VendorFakes:
        # no access log: request lines would be noise, and bodies are never logged
        self._runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def openai_base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def deepgram_url(self) -> str:
        return f"ws://{self.host}:{self.port}/v1/listen"

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
    chat_script: ChatScript | None = None,
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


def _reply(spec: dict[str, Any]) -> Say | CallTool:
    if "tool" in spec:
        return CallTool(spec["tool"], spec.get("arguments", {}), spec.get("say_first", ""))
    return Say(spec["say"])


def fakes_from_config(config: dict[str, Any]) -> VendorFakes:
    """Fakes described by JSON (what the benchmarks hand to a fake-server process)."""
    script = ChatScript(
        [
            ChatTurn(turn["user_says"], tuple(_reply(r) for r in turn["replies"]))
            for turn in config.get("turns", [])
        ],
        fallback=_reply(config["fallback"]) if config.get("fallback") else None,
    )
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
