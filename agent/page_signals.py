"""What the worker tells the demo page over LiveKit besides its voice and the transcript.

Two text-stream topics of ours, each message one JSON object with a version field `v`, sent
to the visitor only (never to another participant), uncompressed:

- `ocf.latency`, after each agent reply that answered the caller: how long the caller
  waited, from the end of their speech to the agent's first audio. The figure is
  livekit-agents' own `e2e_latency`, which it puts on the reply's chat message: the
  reply's first audio frame handed to the room minus the moment the VAD heard the caller
  stop. `{"v": 1, "seconds": 0.873}`
- `ocf.recap`, once, just before the worker hangs up while the visitor is still in the
  room (agent.recap).

docs/agent.md ("What the page receives") is the contract. Neither message is stored
anywhere or logged: the log says at most that a recap of N items was sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.voice.events import ConversationItemAddedEvent

log = logging.getLogger("agent.page_signals")

RECAP_TOPIC = "ocf.recap"
LATENCY_TOPIC = "ocf.latency"
LATENCY_VERSION = 1
# A message the room cannot take within this long is dropped (the call goes on without it).
SEND_TIMEOUT_S = 5.0


def visitor_identities(room: rtc.Room) -> list[str]:
    """Everyone in the room but agents: the visitor (the token server admits no one else)."""
    return [
        p.identity
        for p in room.remote_participants.values()
        if p.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    ]


def reply_latency(item: Any) -> float | None:
    """Seconds from the end of the caller's speech to the first audio of the reply this chat
    item holds, as livekit-agents measured it; None for anything else (the caller's own
    messages, the greeting and other lines said on the worker's own initiative, tool calls,
    a reply that never played)."""
    if getattr(item, "type", None) != "message" or getattr(item, "role", None) != "assistant":
        return None
    seconds = item.metrics.get("e2e_latency")
    if not isinstance(seconds, int | float) or seconds < 0:
        return None
    return float(seconds)


def latency_message(seconds: float) -> dict[str, Any]:
    return {"v": LATENCY_VERSION, "seconds": round(seconds, 3)}


class PageSignals:
    """The worker's messages to the visitor's page in one room."""

    def __init__(self, room: rtc.Room) -> None:
        self._room = room
        self._sending: set[asyncio.Task[bool]] = set()
        self.latencies_sent = 0

    def attach(self, session: AgentSession[Any]) -> None:
        session.on("conversation_item_added", self._on_item)

    def _on_item(self, ev: ConversationItemAddedEvent) -> None:
        seconds = reply_latency(ev.item)
        if seconds is None:
            return
        task = asyncio.create_task(self._send(LATENCY_TOPIC, latency_message(seconds)))
        self._sending.add(task)
        task.add_done_callback(self._latency_done)

    def _latency_done(self, task: asyncio.Task[bool]) -> None:
        self._sending.discard(task)
        if not task.cancelled() and task.result():
            self.latencies_sent += 1

    async def settle(self) -> None:
        """Let the latency messages under way go first (each is bounded by its timeout)."""
        if self._sending:
            await asyncio.gather(*list(self._sending), return_exceptions=True)

    async def send_recap(self, recap: dict[str, Any]) -> bool:
        """Send the recap if the visitor is still there; True once the room took it."""
        await self.settle()
        sent = await self._send(RECAP_TOPIC, recap)
        if sent:
            log.info("recap sent", extra={"items": len(recap.get("items", ()))})
        return sent

    async def _send(self, topic: str, payload: dict[str, Any]) -> bool:
        if not self._room.isconnected():
            return False
        visitors = visitor_identities(self._room)
        if not visitors:
            return False
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        try:
            await asyncio.wait_for(
                self._room.local_participant.send_text(
                    text, topic=topic, destination_identities=visitors, compress=False
                ),
                SEND_TIMEOUT_S,
            )
        except Exception as exc:  # the room went away, or it timed out: the call goes on
            log.warning("page message not sent", extra={"topic": topic,
                                                        "error": type(exc).__name__})  # fmt: skip
            return False
        return True
