"""Why a call ended: the values of the session record's `end_reason`."""

from __future__ import annotations

from enum import StrEnum

# The agent participant's attribute naming why the call ended, set just before the room is
# deleted; the demo page (web/src/agent_signals.js) words its message from it.
END_REASON_ATTRIBUTE = "ocf.end_reason"


class EndReason(StrEnum):
    USER_HANGUP = "user_hangup"
    END_CALL = "end_call"
    MAX_DURATION = "max_duration"
    SILENCE = "silence"
    ERROR = "error"
    SHUTDOWN = "shutdown"
