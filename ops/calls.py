"""Ending calls from ops: the room is deleted through LiveKit's RoomService (the same
LIVEKIT_URL and API key the token server signs with), which disconnects the visitor and
the agent; the worker then ends the call as it does when the room goes away.

Used by erasure: a visitor who asked to be forgotten must not stay on a call whose record
is gone. A room that does not exist is a session nobody joined (nothing to end).
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from livekit import api

from server.settings import Settings

TIMEOUT_S = 10.0


@dataclass
class CallsEnded:
    ended: int = 0  # rooms deleted: the visitor (and the agent) were disconnected
    no_room: int = 0  # the room did not exist: nobody had joined
    not_ended: int = 0
    error: str | None = None  # why the ones not ended were not

    def as_dict(self) -> dict[str, object]:
        return {
            "ended": self.ended,
            "no_room": self.no_room,
            "not_ended": self.not_ended,
            "error": self.error,
        }


def configured(settings: Settings) -> bool:
    return bool(settings.livekit_url and settings.livekit_api_key and settings.livekit_api_secret)


async def end_calls(settings: Settings, rooms: list[str]) -> CallsEnded:
    result = CallsEnded()
    if not rooms:
        return result
    if not configured(settings):
        result.not_ended, result.error = len(rooms), "LiveKit is not configured"
        return result
    lk = api.LiveKitAPI(
        settings.livekit_url,
        settings.livekit_api_key,
        settings.livekit_api_secret,
        timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
    )
    try:
        for i, room in enumerate(rooms):
            try:
                await lk.room.delete_room(api.DeleteRoomRequest(room=room))
                result.ended += 1
            except api.ServerError as exc:
                if exc.code == api.ServerErrorCode.NOT_FOUND:
                    result.no_room += 1
                else:
                    result.not_ended += 1
                    result.error = f"LiveKit answered {exc.code}: {exc.message}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                # Unreachable: the other rooms would wait as long for the same answer.
                result.not_ended += len(rooms) - i
                result.error = f"LiveKit unreachable ({type(exc).__name__})"
                break
    finally:
        await lk.aclose()
    return result
