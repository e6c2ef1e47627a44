"""A small pipelined Redis client for the token endpoint's one hot command.

Admission is one EVALSHA per request. Through redis-py's asyncio client that call cost more
CPU than the whole rest of the admission (connection-pool checkout, retry wrapper, command
packing: see bench/token_throughput.py), and the public endpoint must stay cheap under floods.
This client keeps one connection, writes each command as soon as it is made and matches
replies to requests in order (Redis answers in order on a connection), so concurrent
requests pipeline naturally. It speaks only what admission needs (EVALSHA with an EVAL
fallback, AUTH, SELECT, PING); everything else uses redis-py.

Failure behaviour matches redisdb/connection.py: no hidden retries, a call fails within
`timeout_s` with redis-py's ConnectionError/TimeoutError (so REDIS_ERRORS catches it), and
the next call reconnects by itself when Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from typing import cast
from urllib.parse import unquote, urlsplit

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Reply = bytes | int | list["Reply"] | ResponseError | None


def encode_command(*parts: bytes | str | int | float) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Incomplete(Exception):
    """The buffer does not hold a whole reply yet."""


def parse_reply(buf: bytes | bytearray, pos: int) -> tuple[Reply, int]:
    """One RESP2 reply from buf[pos:]; returns (reply, next position)."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind, line = buf[pos : pos + 1], bytes(buf[pos + 1 : end])
    pos = end + 2
    if kind == b"+":
        return line, pos
    if kind == b"-":
        text = line.decode(errors="replace")
        if text.startswith("NOSCRIPT"):
            return NoScriptError(text), pos
        return ResponseError(text), pos
    if kind == b":":
        return int(line), pos
    if kind == b"$":
        length = int(line)
        if length < 0:
            return None, pos
        if len(buf) < pos + length + 2:
            raise _Incomplete
        return bytes(buf[pos : pos + length]), pos + length + 2
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, pos
        items: list[Reply] = []
        for _ in range(count):
            item, pos = parse_reply(buf, pos)
            items.append(item)
        return items, pos
    raise RedisConnectionError(f"unexpected reply type {kind!r}")


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.pending: deque[asyncio.Future[Reply]] = deque()
        self.buffer = bytearray()
        self.outgoing: list[bytes] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio's.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        pos = 0
        while self.pending and pos < len(self.buffer):
            try:
                reply, pos = parse_reply(self.buffer, pos)
            except _Incomplete:
                break
            future = self.pending.popleft()
            if not future.done():  # a caller that timed out has gone
                future.set_result(reply)
        del self.buffer[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    def fail(self, error: Exception) -> None:
        self.closed = True
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_exception(error)
        if self.transport is not None:
            self.transport.abort()

    def request(self, payload: bytes) -> asyncio.Future[Reply]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        if self.closed or self.transport is None:
            future.set_exception(RedisConnectionError("not connected to Redis"))
            return future
        self.pending.append(future)
        # Commands made in the same event-loop turn leave in one write (one syscall):
        # under load that is a real pipeline, at no cost in latency.
        if not self.outgoing:
            loop.call_soon(self.flush)
        self.outgoing.append(payload)
        return future

    def flush(self) -> None:
        if self.outgoing and self.transport is not None and not self.closed:
            self.transport.write(b"".join(self.outgoing))
        self.outgoing.clear()


class PipelinedRedis:
    def __init__(self, url: str, timeout_s: float = 0.5) -> None:
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise ValueError("PipelinedRedis speaks plain redis:// only")
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._db = int(parts.path.lstrip("/") or 0)
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._timeout = timeout_s
        self._conn: _Connection | None = None
        self._connecting: asyncio.Lock | None = None

    @staticmethod
    def supports(url: str) -> bool:
        return urlsplit(url).scheme == "redis"

    async def _connection(self) -> _Connection:
        current = self._conn
        if current is not None and not current.closed:
            return current
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            current = self._conn
            if current is not None and not current.closed:
                return current
            conn = await self._open()
            self._conn = conn
            return conn

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(_Connection, self._host, self._port), self._timeout
            )
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc
        setup: list[bytes] = []
        if self._password is not None:
            if self._username:
                setup.append(encode_command("AUTH", self._username, self._password))
            else:
                setup.append(encode_command("AUTH", self._password))
        if self._db:
            setup.append(encode_command("SELECT", self._db))
        for command in setup:
            reply = await self._await(conn, conn.request(command))
            if isinstance(reply, ResponseError):
                conn.fail(RedisConnectionError(str(reply)))
                raise RedisConnectionError(f"Redis refused the connection setup: {reply}")
        return conn

    async def _await(self, conn: _Connection, future: asyncio.Future[Reply]) -> Reply:
        try:
            return await asyncio.wait_for(future, self._timeout)
        except TimeoutError as exc:
            # Replies on this connection can no longer be trusted to line up: start afresh.
            conn.fail(RedisTimeoutError("Redis did not answer in time"))
            raise RedisTimeoutError("Redis did not answer in time") from exc

    async def execute(self, *parts: bytes | str | int | float) -> Reply:
        conn = await self._connection()
        reply = await self._await(conn, conn.request(encode_command(*parts)))
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def evalsha(
        self,
        sha: str,
        script: bytes | str,
        keys: Sequence[str],
        args: Sequence[bytes | str | int | float],
    ) -> Reply:
        """EVALSHA, loading the script with EVAL when Redis does not know it (restart)."""
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.execute("EVAL", script, len(keys), *keys, *args)

    async def aclose(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.fail(RedisConnectionError("client closed"))
            self._conn = None
