"""Helpers for the token-server tests: Redis snapshots, token decoding, server pairs, bursts.

Kept apart from tests/support.py (shared by every suite) because these only make sense
for the token endpoint's contract.
"""

from __future__ import annotations

import asyncio
import copy
import json
import socket
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import redis
import yaml
from livekit import api

from tests.support import ROOT, ServerProcess, _merge

# Test credentials: long enough to look like real ones, obviously not real.
API_KEY = "APItestkey0000"
API_SECRET = "test-secret-0123456789abcdefghijklmnopqrstuvwxyz"
AGENT_NAME = "ocf-test-agent"


def roomy_caps(limits: Mapping[str, object] | None = None, n: int = 100_000) -> dict[str, Any]:
    """A limits override (for write_policies) that takes the unjoined-token caps and every
    prefix aggregate of policies/limits.yaml out of the way, merged with `limits`: for
    tests about something else that take tokens for one address, or many neighbouring
    ones (documentation ranges share a /24), and never join with them."""
    shipped = yaml.safe_load((ROOT / "policies" / "limits.yaml").read_text())
    caps = {"concurrent_sessions": n, "sessions_per_hour": n, "sessions_per_day": n,
            "unjoined_tokens": n}  # fmt: skip
    override: dict[str, Any] = {
        "visitor": {"unjoined_tokens": n},
        "global": {"unjoined_tokens": n},
        "networks": {
            family: {prefix: dict(caps) for prefix in levels}
            for family, levels in shipped["networks"].items()
        },
    }
    _merge(override, copy.deepcopy(dict(limits or {})))
    return override


@dataclass(frozen=True)
class StoredKey:
    name: bytes
    kind: str
    ttl: int
    # Everything the key holds (members, fields, values, scores), flattened to bytes.
    contents: tuple[bytes, ...]

    def blob(self) -> bytes:
        return b"\n".join((self.name, *self.contents))


def _b(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def dump_redis(sync_client: redis.Redis) -> list[StoredKey]:
    """Every key in the database with its type, TTL and full contents, whatever the type."""
    # redis-py's stubs type replies as unions of every protocol's shapes; these are RESP2.
    client: Any = sync_client
    out = []
    for name in client.scan_iter(count=500):
        kind = _b(client.type(name)).decode()
        contents: list[bytes] = []
        if kind == "string":
            contents.append(_b(client.get(name)))
        elif kind == "hash":
            for field, value in client.hgetall(name).items():
                contents += [_b(field), _b(value)]
        elif kind == "set":
            contents += [_b(m) for m in client.smembers(name)]
        elif kind == "zset":
            for member, score in client.zrange(name, 0, -1, withscores=True):
                contents += [_b(member), _b(score)]
        elif kind == "list":
            contents += [_b(v) for v in client.lrange(name, 0, -1)]
        elif kind == "stream":
            for entry_id, fields in client.xrange(name):
                contents.append(_b(entry_id))
                for field, value in fields.items():
                    contents += [_b(field), _b(value)]
        else:
            raise AssertionError(f"unexpected Redis type {kind} for {name!r}")
        out.append(StoredKey(_b(name), kind, int(client.ttl(name)), tuple(contents)))
    return out


def key_names(client: redis.Redis) -> set[bytes]:
    return {_b(k) for k in client.scan_iter(count=500)}


@dataclass(frozen=True)
class DecodedToken:
    claims: api.access_token.Claims
    raw: dict[str, Any]


def decode_token(token: str, key: str = API_KEY, secret: str = API_SECRET) -> DecodedToken:
    """Verify the signature with LiveKit's own verifier; keep the raw JWT payload too (the
    verifier's Claims drop nbf/exp and any claim it does not model)."""
    claims = api.TokenVerifier(key, secret).verify(token)
    raw = jwt.decode(token, secret, algorithms=["HS256"], issuer=key)
    return DecodedToken(claims, raw)


def settings_env(redis_url: str, **extra: str) -> dict[str, str]:
    """Environment for a token-server subprocess with the test credentials."""
    return {
        "ENVIRONMENT": "development",
        "REDIS_URL": redis_url,
        "LIVEKIT_URL": "wss://livekit.test.invalid",
        "LIVEKIT_API_KEY": API_KEY,
        "LIVEKIT_API_SECRET": API_SECRET,
        "AGENT_NAME": AGENT_NAME,
        "TRUSTED_PROXIES": "",
        "ALLOWED_ORIGINS": "",
        **extra,
    }


@contextmanager
def running_servers(envs: Sequence[Mapping[str, str]]) -> Iterator[list[ServerProcess]]:
    """Start several token-server processes side by side (in parallel: start-up is mostly
    imports) and always stop them."""
    servers = [ServerProcess(env=dict(env)) for env in envs]
    try:
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(lambda s: s.start(), servers))
        yield servers
    finally:
        for server in servers:
            server.stop()


async def burst(
    requests: Iterable[tuple[str, dict[str, str]]],
    body: Mapping[str, object],
) -> list[httpx.Response]:
    """Fire every (url, headers) request at once and wait for all answers.

    The requests are created first and released together by one event, so they really
    are in flight simultaneously rather than trickling out as they are built.
    """
    go = asyncio.Event()
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one(url: str, headers: dict[str, str]) -> httpx.Response:
            await go.wait()
            return await client.post(url, json=dict(body), headers=headers)

        tasks = [asyncio.create_task(one(url, headers)) for url, headers in requests]
        await asyncio.sleep(0)
        go.set()
        return list(await asyncio.gather(*tasks))


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends on a raw connection until it hangs up (a reset after
    its answer, as when it closes with unread input, ends the reading too)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + micros / 1_000_000


def away_from_bucket_edge(client: redis.Redis, bucket_s: int, margin_s: float = 5.0) -> None:
    """Admission counts per hour/day bucket of the Redis clock: a burst that straddles a
    bucket boundary would legitimately admit more. Wait until the burst fits in one."""
    left = bucket_s - redis_now(client) % bucket_s
    if left < margin_s:
        time.sleep(left + 0.2)


def status_counts(responses: Iterable[httpx.Response]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for response in responses:
        counts[response.status_code] = counts.get(response.status_code, 0) + 1
    return counts


def error_codes(responses: Iterable[httpx.Response]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for response in responses:
        if response.status_code >= 400:
            code = json.loads(response.content)["error"]
            counts[code] = counts.get(code, 0) + 1
    return counts


def make_app(redis_url: str, policies_dir: Path, **overrides: Any) -> Any:
    """The real app, in-process (httpx.ASGITransport), for plain request/response checks."""
    from server.app import create_app
    from server.settings import Settings

    values: dict[str, Any] = {
        "environment": "development",
        "redis_url": redis_url,
        "livekit_url": "wss://livekit.test.invalid",
        "livekit_api_key": API_KEY,
        "livekit_api_secret": API_SECRET,
        "agent_name": AGENT_NAME,
        "policies_dir": policies_dir,
        "trusted_proxies": [],
        "allowed_origins": [],
        **overrides,
    }
    return create_app(Settings(_env_file=None, **values))  # type: ignore[call-arg]


def asgi_client(app: Any, peer: str = "127.0.0.1") -> httpx.AsyncClient:
    """An HTTP client whose requests reach the app from socket peer `peer`."""
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://demo.test")


def session_record(client: redis.Redis, session_id: str) -> dict[str, str]:
    from redisdb import keys

    raw: Any = client.hgetall(keys.session(session_id))
    return {_b(k).decode(): _b(v).decode() for k, v in raw.items()}
