"""Structured (JSON lines) logging, and the filter every process's log goes through.

Nothing here should ever receive a raw address or user agent: callers log pseudonyms at
most, uvicorn's access log (which prints the client address) is switched off in favour of
our own request log, and the token server speaks no WebSocket (uvicorn's WebSocket
protocols log the client address). `PrivacyFilter` is the net under all of that, on the
token server's handler and on the worker's (`guard_handlers`): it masks any IP address
left in a record's message or fields, and drops the fields in which livekit-agents logs
what a caller said (transcripts, chat text, tool arguments: `lk.pii.*`, at DEBUG).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import sys
import time
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
MASK = "[address]"
# Candidates only (a dotted quad; hex groups with at least two colons, perhaps ending in
# a dotted quad); each one is masked only if it parses as an address, so "12:30:45" stays.
_CANDIDATE = re.compile(
    r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?!\.?\d)"
    r"|(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?"
    r"(?![\w:]|\.\d)"
)


def _mask_one(match: re.Match[str]) -> str:
    try:
        ipaddress.ip_address(match.group(0))
    except ValueError:
        return match.group(0)
    return MASK


def mask_addresses(text: str) -> str:
    return _CANDIDATE.sub(_mask_one, text) if (":" in text or "." in text) else text


def caller_content(field: str) -> bool:
    """A log field holding what a caller said: livekit-agents marks them `lk.pii.*` (the
    same rule as its own telemetry redaction, livekit.agents.telemetry.pii)."""
    return "pii" in field.split(".")


class PrivacyFilter(logging.Filter):
    """Drops caller content and masks addresses in every record a handler emits."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in list(vars(record).items()):
            if key in _STANDARD or key.startswith("_"):
                continue
            if caller_content(key):
                delattr(record, key)
            elif isinstance(value, str):
                setattr(record, key, mask_addresses(value))
            elif isinstance(value, dict | list | tuple):
                text = json.dumps(value, default=str, ensure_ascii=False)
                if mask_addresses(text) != text:
                    setattr(record, key, mask_addresses(text))
        message = record.getMessage()
        masked = mask_addresses(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


_FILTER = PrivacyFilter()


def guard_handlers() -> None:
    """Put the privacy filter on every handler of the root logger (idempotent). For the
    worker, whose handlers livekit-agents' CLI installs: call it once they exist."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, PrivacyFilter) for f in handler.filters):
            handler.addFilter(_FILTER)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            # uvicorn adds an ANSI-coloured copy of its message ("color_message").
            if key not in _STANDARD and not key.startswith(("_", "color_")):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_FILTER)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's own loggers would otherwise print client addresses.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True


def now_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)
