"""What a caller says never reaches the worker's logs, even in `dev` (issue 11, item 6).

`python -m agent dev` logs at DEBUG through livekit-agents' CLI handler, and livekit-agents
logs every user transcript, every chat message and every tool call's arguments at DEBUG
(`lk.pii.*` fields). Here the worker's logging is set up as the CLI does it in dev mode
(its handler, its DEBUG levels, then our `worker_started` hook), and a spoken call runs
through the worker's own assembly with the real plugins against the vendor fakes: the
transcripts are the caller's words. The whole log output is then searched for them, and
for any address.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import re
import time
from collections.abc import Iterator

import pytest
from livekit.agents.cli.log import setup_logging as livekit_cli_logging

from agent.worker import build_server
from server.settings import Settings
from tests.fakes.llm_script import Reply, Script, ToolCall, Turn
from tests.fakes.openai_speech import SpeechSettings
from tests.fakes.server import running_vendor_fakes
from tests.voice.harness import start_voice_call, tomorrow

pytestmark = pytest.mark.voice

BOOKING = "Yes please, tomorrow at eleven. I am Odile Fenwick, my number is 06 44 55 66 77."
GOODBYE = "That is all, thank you, goodbye."
# Said by the caller, or handed to a tool from what the caller said.
PRIVATE = ("Odile Fenwick", "Fenwick", "44 55 66 77", "tomorrow at eleven", "thank you, goodbye")
TOKENS = re.compile(r"[0-9A-Fa-f:.]{3,}")


def addresses(text: str) -> list[str]:
    """Every word of `text` (split at anything but hex digits, colons and dots, then at a
    trailing ':port' or '.') that is an IPv4 or IPv6 address."""
    found = []
    for token in TOKENS.findall(text):
        for candidate in {token, token.strip(".:"), token.rsplit(":", 1)[0]}:
            try:
                ipaddress.ip_address(candidate)
            except ValueError:
                continue
            found.append(candidate)
    return found


@pytest.fixture
def dev_logging() -> Iterator[io.StringIO]:
    """The worker's logs as `python -m agent dev` writes them, into a buffer."""
    root = logging.getLogger()
    loggers = [root, *(lg for lg in logging.Logger.manager.loggerDict.values()
                       if isinstance(lg, logging.Logger))]  # fmt: skip
    levels = {logger: logger.level for logger in loggers}
    handlers = list(root.handlers)
    livekit_cli_logging("DEBUG", devmode=True, console=False)
    added = [h for h in root.handlers if h not in handlers]
    assert len(added) == 1 and isinstance(added[0], logging.StreamHandler)
    stream = io.StringIO()
    added[0].setStream(stream)
    # The server registers the hook; livekit-agents fires it once its CLI has set up logging.
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    build_server(settings, check_keys=False).emit("worker_started")
    try:
        yield stream
    finally:
        for handler in root.handlers:
            handler.filters.clear()
        root.handlers[:] = handlers
        for logger, level in levels.items():
            logger.setLevel(level)


async def test_dev_mode_logs_hold_nothing_the_caller_said(dev_logging: io.StringIO) -> None:
    book = {"listing_ref": "BDX-201", "date": tomorrow(), "time": "11:00",
            "name": "Odile Fenwick", "phone": "06 44 55 66 77"}  # fmt: skip
    script = Script(
        Turn(BOOKING, Reply(tools=(ToolCall("book_visit", book),)),
             Reply("Done, the viewing is booked.")),
        Turn(GOODBYE, Reply("Have a lovely day!", tools=(ToolCall("end_call"),))),
    )  # fmt: skip
    speech = SpeechSettings(words_per_minute=300, realtime_factor=8)
    async with running_vendor_fakes(
        chat_script=script, transcripts=[BOOKING, GOODBYE], speech=speech
    ) as fakes:
        joined = time.monotonic()
        async with await start_voice_call(fakes, "realty-desk-en") as call:
            await call.speaker.wait_for_segment_after(joined, 10)  # the greeting...
            await call.speaker.wait_until_quiet(15)  # ...heard to its end
            booking = call.say(BOOKING)
            await booking.done.wait()
            assert booking.speech_end_wall is not None
            await call.speaker.wait_for_segment_after(booking.speech_end_wall, 15)
            await call.speaker.wait_until_quiet(15)
            call.say(GOODBYE)
            await call.ended(30)
    assert fakes.chat.errors == [], fakes.chat.errors
    assert any(m.get("role") == "tool" for r in fakes.chat.requests for m in r.messages)

    logged = dev_logging.getvalue()
    # The search below read the call's DEBUG lines, the ones that carried the words.
    assert "received user transcript" in logged
    assert "conversation_item_added" in logged
    for words in PRIVATE:
        assert words.casefold() not in logged.casefold(), words
    assert addresses(logged) == []
