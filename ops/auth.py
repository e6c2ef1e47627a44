"""The ops credentials: `Authorization: Bearer $OPS_TOKEN` for the API and the page,
`Authorization: Bearer $METRICS_TOKEN` (read-only) for /metrics, compared in constant time
(failed attempts are limited: ops/signin.py).

A credential not configured means its surface answers 404 as if it did not exist: off,
never open.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request

from server.errors import ApiError, read_bounded


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused (413) as soon as it is known to exceed max_bytes: the webhook and
    the sign-in form read bodies before any check."""
    declared = request.headers.get("content-length")
    return await read_bounded(
        None if declared is None else declared.encode("latin-1"),
        request.stream(),
        max_bytes,
        ApiError(413, "body_too_large", f"The body is limited to {max_bytes} bytes."),
    )


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


def unauthorized(variable: str, realm: str) -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        f"Send the {realm} token as `Authorization: Bearer <{variable}>`.",
        {"WWW-Authenticate": f'Bearer realm="{realm}"'},
    )
