"""`POST /api/token/release`: the page gives back a token it could not use.

Body `{"session_id": ..., "release_secret": ...}` (both from the token's 201 answer). A
session no worker has claimed yet is released at once (policies/give_back.py): its slots
and reserved minutes come back, so the visitor's "Call again" is admitted. Same error shape
and body limits as `POST /api/token`; a plain ASGI app served beside it.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from starlette.types import Receive, Scope

from policies.give_back import GiveBackAnswer, GiveBackResult
from redisdb.connection import REDIS_ERRORS
from server.errors import ApiError
from server.services import Services
from server.token_endpoint import PostEndpoint, parse_json_body, read_body, redis_unavailable

log = logging.getLogger("token_server")

PATH = "/api/token/release"
# Session ids and secrets are url-safe base64 (secrets.token_urlsafe).
_TOKEN_TEXT = re.compile(r"[A-Za-z0-9_-]{1,64}")


def requested_release(body: Any) -> tuple[str, str]:
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_request", "The request body must be a JSON object.")
    values = (body.get("session_id"), body.get("release_secret"))
    if not all(isinstance(v, str) and _TOKEN_TEXT.fullmatch(v) for v in values):
        raise ApiError(
            422,
            "invalid_request",
            "Send the session_id and release_secret the token was issued with.",
        )
    return values  # type: ignore[return-value]


def answer(session_id: str, result: GiveBackResult) -> tuple[int, bytes]:
    if result.answer is GiveBackAnswer.GIVEN_BACK:
        payload = {"session_id": session_id, "status": result.status,
                   "refunded_s": result.refunded_s}  # fmt: skip
        return 200, json.dumps(payload, separators=(",", ":")).encode()
    if result.answer is GiveBackAnswer.REFUSED:
        # Unknown session and wrong secret are one answer: neither is confirmed to a guesser.
        raise ApiError(403, "release_refused", "Unknown session or wrong release secret.")
    if result.answer is GiveBackAnswer.STARTED:
        raise ApiError(
            409, "not_releasable", "The call has started: hang up to end it.", reason="started"
        )
    raise ApiError(
        409, "not_releasable", "This session is closed already.", reason=result.status or None
    )


class GiveBackEndpoint(PostEndpoint):
    def __init__(self, services: Services) -> None:
        self.services = services

    async def handle(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        services = self.services
        headers = dict(scope["headers"])
        body = await read_body(headers, receive, services.policies.limits.http.max_body_bytes)
        session_id, secret = requested_release(parse_json_body(headers, body))
        try:
            result = await services.give_back.give_back(session_id, secret)
        except REDIS_ERRORS as exc:
            raise redis_unavailable(services, "give_back", exc) from exc
        if result.answer is GiveBackAnswer.GIVEN_BACK:
            if services.ops:
                services.ops.on_given_back()
            log.debug("token given back", extra={"session_id": session_id})
        return answer(session_id, result)
