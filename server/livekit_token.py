"""Mint the LiveKit room token a visitor joins with.

Only server-side values go into it: nothing a client sent is copied, the identity is random,
and the grants allow one room, joining, subscribing, publishing the microphone and data.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from livekit import api
from livekit.protocol.agent_dispatch import RoomAgentDispatch
from livekit.protocol.room import RoomConfiguration

from agents_catalog.dispatch import DispatchMetadata
from policies.model import RoomLimits


def new_session_id() -> str:
    return secrets.token_urlsafe(12)


def room_name(session_id: str) -> str:
    return f"demo-{session_id}"


def new_identity() -> str:
    # Random, never derived from the address: the identity is visible to the room.
    return f"visitor-{secrets.token_hex(6)}"


def mint_token(
    *,
    api_key: str,
    api_secret: str,
    agent_name: str,
    room: str,
    dispatch: DispatchMetadata,
    ttl_s: int,
    room_limits: RoomLimits,
) -> str:
    grants = api.VideoGrants(
        room_join=True,
        room=room,
        can_subscribe=True,
        can_publish=True,
        can_publish_sources=["microphone"],
        can_publish_data=True,
        can_update_own_metadata=False,
        room_create=False,
        room_list=False,
        room_record=False,
        room_admin=False,
        ingress_admin=False,
        hidden=False,
        recorder=False,
        agent=False,
    )
    config = RoomConfiguration(
        name=room,
        max_participants=room_limits.max_participants,
        empty_timeout=room_limits.empty_timeout_s,
        departure_timeout=room_limits.departure_timeout_s,
        agents=[RoomAgentDispatch(agent_name=agent_name, metadata=dispatch.to_json())],
    )
    return (
        api.AccessToken(api_key, api_secret)
        .with_identity(new_identity())
        .with_kind("standard")
        .with_ttl(timedelta(seconds=ttl_s))
        .with_grants(grants)
        .with_room_config(config)
        .to_jwt()
    )
