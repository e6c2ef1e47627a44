"""The dispatch metadata is one contract: what the token server puts in a room token is
exactly what the worker accepts, in the same bytes as before the shared model, and the
worker refuses anything else, a field it does not know included."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from agent.dispatch import JobRejected, parse_job_metadata
from agents_catalog.dispatch import DispatchMetadata
from server.livekit_token import mint_token
from tests.agent.support import CATALOG, POLICIES
from tests.server.support import API_KEY, API_SECRET, decode_token

WRITTEN = DispatchMetadata(
    persona="realty-desk-en",
    session_id="AbCdEfGh12345678",
    language="en",
    max_duration_s=240,
    issued_at=1764240000.125,
)


def test_the_token_carries_what_the_worker_accepts():
    token = mint_token(
        api_key=API_KEY,
        api_secret=API_SECRET,
        agent_name="onecallflow-test",
        room="demo-AbCdEfGh12345678",
        dispatch=WRITTEN,
        ttl_s=60,
        room_limits=POLICIES.limits.room,
    )
    config = decode_token(token).claims.room_config
    assert config is not None
    [dispatch] = config.agents
    # The wire format the worker has always read: compact JSON, these keys in this order.
    assert dispatch.metadata == (
        '{"persona":"realty-desk-en","session_id":"AbCdEfGh12345678","language":"en",'
        '"max_duration_s":240,"issued_at":1764240000.125}'
    )
    spec = parse_job_metadata(dispatch.metadata, CATALOG, POLICIES)
    assert spec.persona.id == "realty-desk-en" and spec.session_id == "AbCdEfGh12345678"
    assert spec.max_duration_s == 240 and spec.issued_at == 1764240000.125


def test_an_unknown_field_is_refused_and_named():
    raw = json.dumps({**WRITTEN.model_dump(), "role": "admin"})
    with pytest.raises(JobRejected, match="unexpected field 'role'"):
        parse_job_metadata(raw, CATALOG, POLICIES)


def test_the_token_server_cannot_write_what_the_worker_would_refuse():
    with pytest.raises(ValidationError):
        DispatchMetadata(persona="realty-desk-en", session_id="../x", language="en",
                         max_duration_s=240)  # fmt: skip
    with pytest.raises(ValidationError):
        DispatchMetadata.model_validate({**WRITTEN.model_dump(), "max_duration_s": 0})
