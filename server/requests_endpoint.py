"""`POST /api/requests`: the demo page's sales-request form.

A plain ASGI app beside `/api/token`, with its guards: the Origin check and CORS
(server.middleware.GuardMiddleware), a body limit (policies/requests.yaml), JSON only, the
same error shape `{"error", "message"}` (+ `reason` on 429, + `fields` on 422). The
visitor's address is read as for a token (TRUSTED_PROXIES) and only its pseudonym is used,
for the day's limits; neither the address nor the user agent is stored. The request is
counted, stored and queued for the mail to sales in one Redis script; the answer is 201
`{"reference": ...}`. Nothing of the form is logged or put in a metric (counts by outcome
only). See docs/sales-requests.md for the contract.
"""

from __future__ import annotations

import dataclasses
import json
import logging

from starlette.types import Receive, Scope

from policies.client_address import request_address
from policies.pseudonyms import VisitorId
from policies.replies import text
from redisdb import keys
from redisdb.connection import REDIS_ERRORS
from sales.form import (
    FormInvalid,
    NotAnObject,
    SalesForm,
    is_honeypot,
    language_of,
    parse_form,
    say,
)
from sales.identity import new_reference
from sales.store import Limited
from server.errors import ApiError
from server.services import Services
from server.token_endpoint import PostEndpoint, parse_json_body, read_body

log = logging.getLogger("sales")

PATH = "/api/requests"
OUTCOMES = ("accepted", "invalid", "rate_limited", "honeypot", "unavailable")


class FormError(ApiError):
    """422 with every field's problem: `fields` maps a field name to its message key, the
    key's bounds, and the server's words in the page's language."""

    def __init__(self, invalid: FormInvalid, language: str) -> None:
        super().__init__(422, "invalid_request", say(language, "invalid_request"))
        self.fields = {name: p.as_dict(language) for name, p in invalid.problems.items()}

    def body(self) -> bytes:
        payload = {"error": self.code, "message": self.message, "fields": self.fields}
        return json.dumps(payload, ensure_ascii=False).encode()


def _created(reference: str) -> tuple[int, bytes]:
    return 201, json.dumps({"reference": reference}).encode()


def _outcome(error: ApiError) -> str:
    return {429: "rate_limited", 503: "unavailable"}.get(error.status, "invalid")


class RequestEndpoint(PostEndpoint):
    def __init__(self, services: Services) -> None:
        self.services = services

    def _count(self, outcome: str) -> None:
        if self.services.ops is not None:
            self.services.ops.metrics.sales_requests.labels(outcome).inc()

    def refused(self, error: ApiError) -> None:
        self._count(_outcome(error))

    async def handle(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        return await self.submit(scope, receive)

    async def submit(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        services = self.services
        rules = services.request_rules
        headers = dict(scope["headers"])
        body = parse_json_body(
            headers, await read_body(headers, receive, rules.limits.max_body_bytes)
        )
        language = language_of(body, rules)
        if is_honeypot(body):
            # A script filled the field people never see: it gets what a person gets, and
            # nothing is stored or counted against anyone.
            self._count("honeypot")
            return _created(new_reference())
        try:
            form = parse_form(body, rules, lambda p: services.catalog.get(p) is not None)
        except NotAnObject:
            raise ApiError(422, "invalid_request", say(language, "not_an_object")) from None
        except FormInvalid as invalid:
            raise FormError(invalid, language) from None
        address = request_address(scope, services.settings.trusted_networks)
        if address is None:
            raise ApiError(400, "no_client_address", "The client address could not be read.")
        try:
            salt = await services.hasher.current_salt()
            visitor = services.hasher.visitor(salt, address)
            form = await self.context(form, visitor)
            outcome = await services.requests.submit(
                form, visitor, notify=services.notifier is not None
            )
        except REDIS_ERRORS as exc:
            log.error("redis unavailable", extra={"error": type(exc).__name__})
            if services.ops:
                services.ops.on_redis_error("sales_request")
            raise ApiError(
                503, "unavailable", say(language, "unavailable"), {"Retry-After": "5"}
            ) from exc
        if isinstance(outcome, Limited):
            raise ApiError(
                429,
                "rate_limited",
                say(language, outcome.reason, limit=outcome.limit),
                {"Retry-After": str(outcome.retry_after_s)},
                reason=outcome.reason,
            )
        self._count("accepted")
        if services.notifier is not None:
            services.notifier.wake()
        return _created(outcome.reference)

    async def context(self, form: SalesForm, visitor: VisitorId) -> SalesForm:
        """The call the request follows, only if it is this visitor's own (its record names
        their pseudonym, under this salt or the previous one): then its persona is the
        record's. A session id that is unknown, expired, erased or someone else's is
        dropped: the request is kept without it."""
        if form.session_id is None:
            return form
        owner, persona = await self.services.redis.hmget(
            keys.session(form.session_id), ["visitor", "persona"]
        )
        mine = {visitor, visitor.previous} - {None}
        owner_text = None if owner is None else text(owner)
        if owner_text is None or owner_text not in mine:
            return dataclasses.replace(form, session_id=None)
        persona_text = None if persona is None else text(persona)
        return dataclasses.replace(form, persona=persona_text or form.persona)
