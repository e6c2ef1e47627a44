"""Connection data of a call: the worst quality seen, with counts, and reconnects, taken
from a real rtc.Room's events (as LiveKit's SDK emits them)."""

from __future__ import annotations

from livekit import rtc

from agent.connection import ConnectionTracker

Q = rtc.ConnectionQuality


def test_summary_keeps_the_worst_level_and_counts():
    tracker = ConnectionTracker()
    assert tracker.summary() == "unknown"
    for quality in (Q.QUALITY_EXCELLENT, Q.QUALITY_GOOD, Q.QUALITY_EXCELLENT, Q.QUALITY_UNKNOWN):
        tracker.quality_changed(int(quality))
    assert tracker.summary() == "good (excellent:2,good:1)"
    tracker.quality_changed(int(Q.QUALITY_LOST))
    tracker.quality_changed(int(Q.QUALITY_POOR))
    assert tracker.summary() == "lost (excellent:2,good:1,poor:1,lost:1)"


async def test_attached_to_a_room_it_follows_quality_and_reconnects():
    room = rtc.Room()
    tracker = ConnectionTracker()
    tracker.attach(room)
    room.emit("connection_quality_changed", None, Q.QUALITY_EXCELLENT)
    room.emit("connection_quality_changed", None, Q.QUALITY_POOR)
    room.emit("reconnecting")
    room.emit("reconnected")
    room.emit("reconnected")
    assert tracker.worst == "poor"
    assert tracker.reconnects == 2
