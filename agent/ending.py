"""Why a call ended: the values of the session record's `end_reason`."""

from __future__ import annotations

from enum import StrEnum


class EndReason(StrEnum):
    USER_HANGUP = "user_hangup"
    END_CALL = "end_call"
    MAX_DURATION = "max_duration"
    SILENCE = "silence"
    ERROR = "error"
    SHUTDOWN = "shutdown"
