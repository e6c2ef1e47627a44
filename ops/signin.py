"""Sign-in to the ops surface (/ops, /ops/*, /metrics): the token compared in constant
time, failed attempts limited per client and for everyone (policies/ops.yaml `signin`).

Each attempt that presents a token first reserves one unit of both counts, atomically in
one script, and is refused (429, the token not even compared) when either is full; a right
token gives its unit back, a wrong one keeps it and leaves an audit-log entry. So however
many guesses arrive at once, no more than the limit are ever compared in a window. The
counts are keyed by the client's visitor pseudonym (never its address) and the window,
with a TTL of the window plus a minute. If Redis cannot count, the token is still compared
(the credentials are long random strings; metrics must stay scrapeable in an outage).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping

from fastapi import Request

from ops import audit_log
from ops.audit_log import Actor
from ops.auth import bearer, ops_enabled, token_matches, unauthorized
from ops.context import OpsContext
from policies.client_address import client_address
from redisdb import keys
from redisdb.connection import REDIS_ERRORS
from server.errors import ApiError

log = logging.getLogger("ops.signin")

# KEYS: the client's failures in this window, everyone's; ARGV: per_client, global, ttl_s.
_RESERVE = """
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then return 0 end
if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[2]) then return 0 end
for _, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 then redis.call('EXPIRE', key, ARGV[3]) end
end
return 1
"""
_GIVE_BACK = """
for _, key in ipairs(KEYS) do
  if redis.call('DECR', key) <= 0 then redis.call('DEL', key) end
end
return 1
"""
EVERYONE = "all"
UNKNOWN = "unknown"


class SigninGuard:
    def __init__(self, ctx: OpsContext, on_redis_error: Callable[[str], None]) -> None:
        self._ctx = ctx
        self._rules = ctx.rules.signin
        self._ttl_s = ctx.rules.signin_ttl_s
        self._reserve = ctx.redis.register_script(_RESERVE)
        self._give_back = ctx.redis.register_script(_GIVE_BACK)
        self._on_redis_error = on_redis_error
        settings = ctx.settings
        # Names of the credentials, to say which one was tried on the wrong surface.
        self._known = {
            "OPS_TOKEN": settings.ops_token,
            "METRICS_TOKEN": settings.metrics_token,
            "SALES_TOKEN": settings.sales_token,
        }

    async def _client(self, request: Request) -> str:
        settings = self._ctx.settings
        peer = request.client.host if request.client else None
        forwarded = request.headers.getlist("x-forwarded-for")
        address = client_address(peer, forwarded, settings.trusted_networks)
        if address is None:
            return UNKNOWN
        hasher = self._ctx.hasher
        return hasher.visitor(await hasher.current_salt(), address)

    def _named(self, given: str) -> str:
        for name, value in self._known.items():
            if token_matches(given, value):
                return name
        return UNKNOWN

    async def check(self, request: Request, given: str, expected: str, via: str) -> bool:
        """True if `given` is the expected token; 429 (ApiError) when the client or
        everyone has failed too often in this window."""
        return await self.which(request, given, {"expected": expected}, via) is not None

    async def which(
        self, request: Request, given: str, accepted: Mapping[str, str], via: str
    ) -> str | None:
        """The name of the accepted credential `given` is (each compared, in constant
        time), or None; 429 (ApiError) as `check`."""
        now = time.time()
        window = int(now // self._rules.window_s)
        reserved = False
        try:
            client = await self._client(request)
            names = [keys.signin_failures(client, window), keys.signin_failures(EVERYONE, window)]
            args = [self._rules.per_client, self._rules.global_, self._ttl_s]
            reserved = int(await self._reserve(keys=names, args=args)) == 1
            if not reserved:
                retry = max(1, int((window + 1) * self._rules.window_s - now))
                raise ApiError(
                    429,
                    "too_many_attempts",
                    "Too many failed sign-ins; try again later.",
                    {"Retry-After": str(retry)},
                )
        except REDIS_ERRORS as exc:
            self._on_redis_error("signin")
            log.error("sign-in attempts not counted", extra={"error": type(exc).__name__})
        matched = [name for name, value in accepted.items() if token_matches(given, value)]
        if matched:
            if reserved:
                with contextlib.suppress(*REDIS_ERRORS):
                    await self._give_back(keys=names)
            return matched[0]
        with contextlib.suppress(*REDIS_ERRORS):
            await audit_log.record(
                self._ctx, Actor(self._named(given), via), "signin_failed", outcome="refused"
            )
        return None


async def authenticate(
    request: Request, guard: SigninGuard, expected: str, variable: str, via: str
) -> None:
    """404 when the credential is not configured, 401 without the right bearer token, 429
    after too many wrong ones."""
    ops_enabled(expected)
    given = bearer(request)
    realm = "metrics" if via == "metrics" else "ops"
    if not given or not await guard.check(request, given, expected, via):
        raise unauthorized(variable, realm)


async def authenticate_any(
    request: Request, guard: SigninGuard, accepted: Mapping[str, str], via: str
) -> str:
    """The name of the credential presented, among those configured in `accepted`; 404
    when none is configured, 401 / 429 as `authenticate`."""
    configured = {name: value for name, value in accepted.items() if value}
    ops_enabled(" ".join(configured.values()))
    given = bearer(request)
    name = await guard.which(request, given, configured, via) if given else None
    if name is None:
        raise unauthorized(" or ".join(configured), "ops")
    return name
