"""What a client may cost a token-server process: the HTTP limits uvicorn does not set.

uvicorn's httptools protocol keeps every header line of a request until the blank line
that ends them, and waits for a request for as long as the client likes: a few clients
sending megabytes of headers grow the process without bound, and one trickling a byte now
and then (slowloris) holds its connection for ever. `LimitedHttpProtocol` is that protocol
with the limits of `policies/limits.yaml` (`http:`), per connection:

- header bytes are counted as they arrive; past `max_header_bytes` the server answers 431
  at once and reads nothing more of that request, so at most that much is ever buffered;
- a request (headers and body) must arrive within `request_read_timeout_s` of its first
  byte, or of the connection's opening for the first one; then 408 and the connection is
  closed (an idle connection that sent nothing is just closed);
- past `max_connections` open connections a new one gets 503 and is closed at once.

With uvicorn's own keep-alive timeout from the same policy. WebSockets are off (the app
serves none, and uvicorn's WebSocket protocols log the client's address): an upgrade
request is answered as plain HTTP, then the connection is closed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from policies.model import HttpLimits

# After a refusal the server stops reading the request but, for this long, takes (and
# drops) what the client is still sending: closing a socket with unread data resets the
# connection, and the client would lose the response it has not read yet.
LINGER_S = 2.0

REFUSALS = {
    408: ("request_timeout", "The request took too long to arrive."),
    431: ("headers_too_large", "Request headers are too large."),
    503: ("busy", "The server is busy. Please try again shortly."),
}


def refusal_bytes(status: int) -> bytes:
    """A complete HTTP response, in the JSON error shape of every other refusal."""
    code, message = REFUSALS[status]
    body = json.dumps({"error": code, "message": message}).encode()
    head = (
        b"content-type: application/json\r\n"
        b"cache-control: no-store\r\n"
        b"connection: close\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    )
    return STATUS_LINE[status] + head + body


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above (see limited_http_protocol)."""

    limits: ClassVar[HttpLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0  # bytes of the current request's head received so far
        self._reading_head = True
        self._heads_done = 0  # request heads parsed on this connection
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False

    # -- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, linger=False)
            return
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered already: what still arrives is dropped
        if self._deadline is None:
            self._arm_deadline()  # the first byte of the next request on a kept-alive one
        if self._reading_head:
            room = self.limits.max_header_bytes - self._head_bytes
            if len(data) > room:
                # Parse no more than the limit allows: either the head ends within it, or
                # the request is refused with the rest of its headers never buffered.
                head, data = data[: max(room, 0)], data[max(room, 0) :]
                self._head_bytes += len(head)
                heads_before = self._heads_done
                if head:
                    super().data_received(head)
                if self._heads_done == heads_before:
                    self._refuse(431)
                    return
                if self.transport.is_closing() or not data:
                    return
            else:
                self._head_bytes += len(data)
        super().data_received(data)

    # -- parser callbacks --------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._heads_done += 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._cancel_deadline()
        self._reading_head = True
        self._head_bytes = 0
        super().on_message_complete()

    def _unsupported_upgrade_warning(self) -> None:
        # uvicorn would log two warnings per attempt (a free log flood); the request is
        # served as plain HTTP, and the connection closed after it: what follows an
        # upgrade request is not HTTP.
        if self.cycle is not None:
            self.cycle.keep_alive = False

    # -- limits ------------------------------------------------------------------------------

    def _arm_deadline(self) -> None:
        self._deadline = self.loop.call_later(
            self.limits.request_read_timeout_s, self._read_timed_out
        )

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _read_timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._reading_head and self._head_bytes:
            self._refuse(408)
        else:
            # Idle before its first byte, or a body still trickling in while the app
            # waits for it (the app then sees the client disconnect).
            self.transport.close()

    def _refuse(self, status: int, *, linger: bool = True) -> None:
        self._refused = True
        self._cancel_deadline()
        if self.cycle is not None and not self.cycle.response_complete:
            # A response of an earlier request is being written: never interleave.
            self.transport.close()
            return
        self.transport.write(refusal_bytes(status))
        if not linger or not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


def limited_http_protocol(limits: HttpLimits) -> type[LimitedHttpProtocol]:
    """The protocol class for uvicorn's `http=`, bound to these limits."""
    return type("LimitedHttpProtocol", (LimitedHttpProtocol,), {"limits": limits})
