"""Technical connection data of a call: the worst connection quality seen and reconnects.

Only quality levels and counts are kept (the privacy policy's "technical connection
data"); no address, no identity, no timing of who said what.
"""

from __future__ import annotations

from typing import Any

from livekit import rtc

# Worst first: the summary keeps the worst level any participant reached.
_RANK = {"lost": 0, "poor": 1, "good": 2, "excellent": 3}
_NAMES = {
    rtc.ConnectionQuality.QUALITY_LOST: "lost",
    rtc.ConnectionQuality.QUALITY_POOR: "poor",
    rtc.ConnectionQuality.QUALITY_GOOD: "good",
    rtc.ConnectionQuality.QUALITY_EXCELLENT: "excellent",
}


class ConnectionTracker:
    def __init__(self) -> None:
        self.worst: str | None = None
        self.counts: dict[str, int] = {}
        self.reconnects = 0

    def quality_changed(self, quality: int) -> None:
        name = _NAMES.get(quality)  # type: ignore[call-overload]
        if name is None:
            return  # "unknown" says nothing about the line
        self.counts[name] = self.counts.get(name, 0) + 1
        if self.worst is None or _RANK[name] < _RANK[self.worst]:
            self.worst = name

    def reconnected(self) -> None:
        self.reconnects += 1

    def summary(self) -> str:
        """e.g. "good (excellent:3,good:1)"; "unknown" when nothing was reported."""
        if self.worst is None:
            return "unknown"
        best_first = sorted(self.counts, key=lambda n: _RANK[n], reverse=True)
        seen = ",".join(f"{n}:{self.counts[n]}" for n in best_first)
        return f"{self.worst} ({seen})"

    def attach(self, room: rtc.Room) -> None:
        def on_quality(_participant: Any, quality: rtc.ConnectionQuality) -> None:
            self.quality_changed(int(quality))

        room.on("connection_quality_changed", on_quality)
        room.on("reconnected", lambda *_: self.reconnected())
