"""A local stand-in for LiveKit's worker endpoint (`/agent` websocket), in LiveKit's own
protobufs (livekit.protocol.agent), for registration and job-acceptance tests.

It checks the worker's bearer token the way LiveKit does (signed with the API key/secret,
carrying the `agent` grant), answers the RegisterWorkerRequest, and lets the test offer
jobs (AvailabilityRequest) and read the worker's AvailabilityResponse. It also serves
RoomService's DeleteRoom (Twirp, protobuf, a token with the `roomCreate` grant), recording
which rooms the worker deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web
from livekit import api
from livekit.protocol import agent, models, room

from tests.fakes.server import serve


@dataclass
class Registration:
    request: agent.RegisterWorkerRequest
    worker_id: str


@dataclass
class LiveKitAgentFake:
    api_key: str
    api_secret: str
    host: str = "127.0.0.1"
    port: int = 0
    registrations: list[Registration] = field(default_factory=list)
    refused_tokens: int = 0
    deleted_rooms: list[str] = field(default_factory=list)
    _registered: asyncio.Queue[Registration] = field(default_factory=asyncio.Queue)
    _answers: asyncio.Queue[agent.AvailabilityResponse] = field(default_factory=asyncio.Queue)
    _ws: web.WebSocketResponse | None = None
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def grants(self, request: web.Request) -> api.VideoGrants | None:
        """The request's video grants if its bearer token is ours (else counted, None)."""
        auth = request.headers.get("Authorization", "")
        try:
            claims = api.TokenVerifier(self.api_key, self.api_secret).verify(
                auth.removeprefix("Bearer ")
            )
        except Exception:
            self.refused_tokens += 1
            return None
        return claims.video or api.VideoGrants()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        grants = self.grants(request)
        if grants is None:
            return web.Response(status=401, text="invalid token")
        if not grants.agent:
            self.refused_tokens += 1
            return web.Response(status=403, text="missing agent grant")

        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._ws = ws
        async for message in ws:
            if message.type != WSMsgType.BINARY:
                continue
            msg = agent.WorkerMessage()
            msg.ParseFromString(message.data)
            which = msg.WhichOneof("message")
            if which == "register":
                registration = Registration(msg.register, f"AW_test{len(self.registrations)}")
                self.registrations.append(registration)
                reply = agent.ServerMessage()
                reply.register.worker_id = registration.worker_id
                reply.register.server_info.CopyFrom(
                    models.ServerInfo(edition=models.ServerInfo.Standard, version="1.9.0",
                                      protocol=16, region="local")
                )  # fmt: skip
                await ws.send_bytes(reply.SerializeToString())
                await self._registered.put(registration)
            elif which == "availability":
                await self._answers.put(msg.availability)
            elif which == "ping":
                pong = agent.ServerMessage()
                pong.pong.last_timestamp = msg.ping.timestamp
                await ws.send_bytes(pong.SerializeToString())
            # update_worker (load reports) and update_job need no answer here
        return ws

    async def delete_room(self, request: web.Request) -> web.Response:
        grants = self.grants(request)
        if grants is None:
            return web.json_response({"code": "unauthenticated", "msg": "bad token"}, status=401)
        if not grants.room_create:
            return web.json_response({"code": "permission_denied", "msg": "no grant"}, status=403)
        deleted = room.DeleteRoomRequest.FromString(await request.read())
        self.deleted_rooms.append(deleted.room)
        return web.Response(
            body=room.DeleteRoomResponse().SerializeToString(),
            content_type="application/protobuf",
        )

    async def registered(self, timeout: float = 30) -> Registration:
        return await asyncio.wait_for(self._registered.get(), timeout)

    async def offer(self, job_id: str, metadata: str, agent_name: str, timeout: float = 10,
                    room_name: str | None = None) -> agent.AvailabilityResponse:  # fmt: skip
        """Offer a room job with this dispatch metadata; the worker's answer."""
        assert self._ws is not None, "no worker connected"
        request = agent.ServerMessage()
        job = request.availability.job
        job.id = job_id
        job.dispatch_id = f"AD_{job_id}"
        job.type = agent.JobType.JT_ROOM
        job.room.CopyFrom(models.Room(sid=f"RM_{job_id}", name=room_name or f"demo-{job_id}"))
        job.metadata = metadata
        job.agent_name = agent_name
        await self._ws.send_bytes(request.SerializeToString())
        while True:
            answer = await asyncio.wait_for(self._answers.get(), timeout)
            if answer.job_id == job_id:
                return answer

    async def start(self) -> LiveKitAgentFake:
        app = web.Application()
        app.router.add_get("/agent", self.handle)
        app.router.add_post("/twirp/livekit.RoomService/DeleteRoom", self.delete_room)
        self._runner, self.port = await serve(app, self.host, self.port)
        return self

    async def stop(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()


@contextlib.asynccontextmanager
async def running_livekit_agent_fake(
    api_key: str, api_secret: str
) -> AsyncIterator[LiveKitAgentFake]:
    fake = await LiveKitAgentFake(api_key, api_secret).start()
    try:
        yield fake
    finally:
        await fake.stop()
