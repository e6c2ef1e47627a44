"""Helpers for the end-to-end tests through a real livekit-server (tests/e2e/livekit_stack.py):
the visitor as LiveKit's Python SDK, what RoomService says, LiveKit's webhook deliveries
as they were sent, the token server's webhook counters, the session record in Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis
import yaml
from livekit import api, rtc
from prometheus_client.parser import text_string_to_metric_families

from redisdb import keys
from tests.e2e.livekit_stack import API_KEY, API_SECRET, Stack
from tests.server.support import roomy_caps
from tests.support import ROOT, RedisServer, write_policies

OPS_TOKEN = "ops-token-for-e2e-tests-0123456789-abcdefghij"
METRICS_TOKEN = "metrics-token-for-e2e-tests-9876543210-zyxwv"
PERSONA = "realty-desk-en"
# int16 RMS of the agent's track while it speaks (espeak-ng through the TTS fake is in the
# thousands; a silent track is 0).
SPEAKING_RMS = 200.0


def e2e_policies(directory: Path, *, room: dict[str, int], session: dict[str, int]) -> Path:
    """The shipped policies with quick room timeouts / join window, and the token server's
    never-joined sweeper running every 5 s (its lowest). The unjoined-token caps and prefix
    aggregates are out of the way (roomy_caps): these tests give tokens to neighbouring
    documentation addresses, some never claimed (no worker in the stack)."""
    write_policies(directory, limits=roomy_caps({"room": room, "session": session}))
    rules = yaml.safe_load((ROOT / "policies" / "ops.yaml").read_text())
    rules["sessions"]["sweep_every_s"] = 5
    (directory / "ops.yaml").write_text(yaml.safe_dump(rules))
    return directory


def stack_env(policies_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "POLICIES_DIR": str(policies_dir),
        "OPS_TOKEN": OPS_TOKEN,
        "METRICS_TOKEN": METRICS_TOKEN,
        **extra,
    }


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.2
) -> float:
    """Seconds until `check()` held; fails after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# --- the token server -------------------------------------------------------------------


def request_token(stack: Stack, visitor_ip: str | None = None) -> httpx.Response:
    """POST /api/token as the demo page does; `visitor_ip` through X-Forwarded-For (the
    stack must trust 127.0.0.1 as a proxy)."""
    headers = {"X-Forwarded-For": visitor_ip} if visitor_ip else {}
    return httpx.post(
        stack.base_url + "/api/token", json={"agent": PERSONA}, headers=headers, timeout=30
    )


def issued(stack: Stack, visitor_ip: str | None = None) -> dict[str, Any]:
    response = request_token(stack, visitor_ip)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def webhook_counts(stack: Stack) -> dict[tuple[str, str], float]:
    """`ocf_livekit_webhooks_total` by (event, outcome), from /metrics."""
    text = httpx.get(
        stack.base_url + "/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        timeout=10,
    ).text
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "ocf_livekit_webhooks_total":
                counts[(sample.labels["event"], sample.labels["outcome"])] = sample.value
    return counts


def counts_since(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
) -> dict[tuple[str, str], float]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


# --- Redis ----------------------------------------------------------------------------------


def redis_of_its_own() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


def session_record(client: redis.Redis, session_id: str) -> dict[str, str]:
    raw: dict[bytes, bytes] = client.hgetall(keys.session(session_id))  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in raw.items()}


def holds_slot(client: redis.Redis, session_id: str) -> bool:
    """Whether any concurrency set (`{ocf}:gact`, `{ocf}:vact:*`) still holds the session."""
    if client.zscore(keys.global_active(), session_id) is not None:
        return True
    return any(
        client.zscore(key, session_id) is not None
        for key in client.scan_iter(match=keys.pattern(keys.VISITOR_ACTIVE))
    )


def _seconds(client: redis.Redis, key: str) -> int:
    value: bytes | None = client.get(key)  # type: ignore[assignment]
    return int(value or 0)


def everyone_today(client: redis.Redis) -> int:
    """Seconds reserved today by all visitors (`{ocf}:gm:<day>`)."""
    return _seconds(client, keys.global_seconds(int(time.time()) // 86_400))


def minutes_counters(client: redis.Redis, record: dict[str, str]) -> tuple[int, int]:
    """The session's day's reserved seconds: its visitor's (`{ocf}:vm:*`) and everyone's
    (`{ocf}:gm:*`)."""
    day = int(record["day"])
    visitor = keys.visitor_bucket(keys.VISITOR_SECONDS, record["visitor"], day)
    return _seconds(client, visitor), _seconds(client, keys.global_seconds(day))


# --- RoomService (with the stack's own API key: what the server really holds) ---------------


async def room_names(stack: Stack) -> set[str]:
    lk = stack.room_api()
    try:
        return {r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms}
    finally:
        await lk.aclose()


async def room_info(stack: Stack, room: str) -> Any:
    lk = stack.room_api()
    try:
        rooms = (await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))).rooms
        return rooms[0] if rooms else None
    finally:
        await lk.aclose()


async def participants(stack: Stack, room: str) -> list[Any]:
    lk = stack.room_api()
    try:
        return list(
            (await lk.room.list_participants(api.ListParticipantsRequest(room=room))).participants
        )
    finally:
        await lk.aclose()


def own_token(room: str, identity: str, **grants: Any) -> str:
    """A token minted with the stack's API key (what only we, never a visitor, can do)."""
    return (
        api.AccessToken(API_KEY, API_SECRET)
        .with_identity(identity)
        .with_grants(api.VideoGrants(room_join=True, room=room, **grants))
        .to_jwt()
    )


# --- the visitor -----------------------------------------------------------------------------


@dataclass
class Visitor:
    """LiveKit's Python SDK holding the token the token server issued."""

    token: dict[str, Any]
    room: rtc.Room = field(default_factory=rtc.Room)
    agent_tracks: asyncio.Queue[rtc.Track] = field(default_factory=asyncio.Queue)

    @property
    def session_id(self) -> str:
        return str(self.token["session_id"])

    @property
    def room_name(self) -> str:
        return str(self.token["room_name"])

    async def join(self, timeout: float = 60) -> Visitor:
        @self.room.on("track_subscribed")
        def _subscribed(
            track: rtc.Track, _: rtc.RemoteTrackPublication, who: rtc.RemoteParticipant
        ) -> None:
            if who.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
                self.agent_tracks.put_nowait(track)

        await asyncio.wait_for(
            self.room.connect(self.token["server_url"], self.token["participant_token"]), timeout
        )
        return self

    async def agent_speaks(self, timeout: float = 120) -> float:
        """The agent's track arrives and carries speech (its greeting); returns the RMS."""
        track = await asyncio.wait_for(self.agent_tracks.get(), timeout)
        stream = rtc.AudioStream(track)
        loudest = 0.0

        async def listen() -> None:
            nonlocal loudest
            async for event in stream:
                samples = np.frombuffer(event.frame.data, dtype=np.int16).astype(np.float64)
                if samples.size:
                    loudest = max(loudest, float(np.sqrt(np.mean(samples**2))))
                if loudest >= SPEAKING_RMS:
                    return

        try:
            await asyncio.wait_for(listen(), timeout)
        finally:
            await stream.aclose()
        return loudest

    async def leave(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.room.disconnect(), 20)


@contextlib.asynccontextmanager
async def visiting(token: dict[str, Any]) -> Any:
    visitor = Visitor(token)
    try:
        yield await visitor.join()
    finally:
        await visitor.leave()


# --- LiveKit's webhook deliveries, as sent ------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    at: float
    authorization: str
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


class WebhookRecorder:
    """A second webhook URL for livekit-server (`running_stack(webhook_urls=...)`): keeps
    every delivery byte for byte, so a test can see what LiveKit sent and replay it."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                recorder.deliveries.append(
                    Delivery(time.time(), self.headers.get("Authorization", ""), body)
                )
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/livekit/webhook"

    @contextlib.contextmanager
    def running(self) -> Iterator[WebhookRecorder]:
        self._thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()

    def of_room(self, room: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.event.get("room", {}).get("name") == room]

    def find(self, room: str, event: str, kind: str | None = None) -> list[Delivery]:
        return [
            d
            for d in self.of_room(room)
            if d.event["event"] == event
            and (kind is None or d.event.get("participant", {}).get("kind", "STANDARD") == kind)
        ]


def replay(stack: Stack, delivery: Delivery) -> httpx.Response:
    """Deliver again to the token server exactly what LiveKit sent (a retry / duplicate)."""
    return httpx.post(
        stack.base_url + "/livekit/webhook",
        content=delivery.body,
        headers={
            "Authorization": delivery.authorization,
            "Content-Type": "application/webhook+json",
        },
        timeout=10,
    )
