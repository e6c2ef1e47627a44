"""The ops credentials: `Authorization: Bearer $OPS_TOKEN` for the API and the page,
`Authorization: Bearer $METRICS_TOKEN` (read-only) for /metrics, compared in constant time
(failed attempts are limited: ops/signin.py).

A credential not configured means its surface answers 404 as if it did not exist: off,
never open.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request


class OpsHttpError(Exception):
    """An ops request refused or failed: rendered as JSON {"error", "message"}."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused as soon as it is known to exceed max_bytes (declared length or
    while streaming): the webhook and the sign-in form read bodies before any check."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise OpsHttpError(413, "body_too_large", f"The body is limited to {max_bytes} bytes.")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise OpsHttpError(413, "body_too_large", f"The body is limited to {max_bytes} bytes.")
    return body


def token_matches(given: str, expected: str) -> bool:
    # compare_digest on bytes: constant time whatever the contents; an empty expected token
    # never matches (the caller turns ops off before getting here).
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def bearer(request: Request) -> str:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def ops_enabled(expected: str) -> None:
    if not expected:
        raise HTTPException(status_code=404)


def unauthorized(variable: str, realm: str) -> OpsHttpError:
    return OpsHttpError(
        401,
        "unauthorized",
        f"Send the {realm} token as `Authorization: Bearer <{variable}>`.",
        {"WWW-Authenticate": f'Bearer realm="{realm}"'},
    )
