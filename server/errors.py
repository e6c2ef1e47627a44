"""The JSON error shape every endpoint (the public API and ops) answers with:
`{"error": code, "message": text}`, and the bounded body read every POST shares, whose 413
is one of those errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable

from fastapi.responses import JSONResponse

NO_STORE = {"Cache-Control": "no-store"}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        # Finer cause within the code (which limit refused), for the page's wording.
        self.reason = reason

    def body(self) -> bytes:
        payload = {"error": self.code, "message": self.message}
        if self.reason:
            payload["reason"] = self.reason
        return json.dumps(payload).encode()


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": code, "message": message},
        status_code=status,
        headers={**NO_STORE, **(headers or {})},
    )


async def read_bounded(
    declared: bytes | None, chunks: AsyncIterable[bytes], max_bytes: int, too_big: ApiError
) -> bytes:
    """The whole body, refused (`too_big`) as soon as it is known to exceed max_bytes: by its
    declared length before anything is read, or while it streams in. A body is read before
    any check of what it holds, so nothing bounds memory but this."""
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise too_big
    body = b""
    async for chunk in chunks:
        body += chunk
        if len(body) > max_bytes:
            raise too_big
    return body
