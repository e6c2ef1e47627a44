"""The JSON error shape every endpoint answers with: `{"error": code, "message": text}`."""

from __future__ import annotations

import json

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
