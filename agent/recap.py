"""The visitor's recap: what the agent did during the call, in the call's language.

Built when the call ends from what the desk really did (agent.desk `actions`: the viewings
it booked, the messages it took, the incidents it logged, the transfers it simulated), so
it can only say what a tool did, never what the model claimed. The worker sends it to the
visitor's page over LiveKit (agent.page_signals, topic `ocf.recap`) and nowhere else: it is
not stored, and the logs say at most how many items it had.

The caller's name and number are in it: the caller said them to have the viewing booked or
the message taken, the live transcript already showed them back on the same page, and the
recap goes to that page only. Reading them back lets the visitor check what the agent
understood (docs/agent.md, "What the page receives").
"""

from __future__ import annotations

from typing import Any

from agent.conversation import Calendar, RecapWords
from agent.desk import (
    Action,
    IncidentReported,
    MessageTaken,
    TransferSimulated,
    ViewingBooked,
)
from agents_catalog.models import Persona

# Bumped when a field changes meaning or goes away (new fields may appear within a version).
RECAP_VERSION = 1

Item = dict[str, Any]


def build_recap(
    actions: list[Action],
    persona: Persona,
    calendar: Calendar,
    words: RecapWords,
    end_reason: str,
) -> dict[str, Any]:
    """The recap message (JSON-able): version, language, why the call ended, the items."""
    say = _Lines(persona, calendar, words)
    return {
        "v": RECAP_VERSION,
        "lang": persona.language,
        "end_reason": end_reason,
        "items": [say.item(action) for action in actions],
    }


class _Lines:
    def __init__(self, persona: Persona, calendar: Calendar, words: RecapWords) -> None:
        self._persona = persona
        self._calendar = calendar
        self._words = words

    def item(self, action: Action) -> Item:
        if isinstance(action, ViewingBooked):
            return self._viewing(action)
        if isinstance(action, MessageTaken):
            return self._message(action)
        if isinstance(action, IncidentReported):
            return self._incident(action)
        return self._transfer(action)

    def _viewing(self, done: ViewingBooked) -> Item:
        w = self._words
        listing = done.listing
        place = f"{listing.district}, {listing.city}"
        day = self._calendar.say(done.day)
        at = w.time.format(hour=done.start.hour, minute=f"{done.start.minute:02d}")
        text = w.viewing.format(
            kind=w.kinds[listing.kind],
            place=place,
            day=day,
            time=at,
            reference=done.reference,
            name=done.name,
            phone=done.phone,
        )
        return {
            "type": "viewing",
            "reference": done.reference,
            "listing_ref": listing.ref,
            "property": listing.kind,
            "transaction": listing.transaction,
            "place": place,
            "date": done.day.isoformat(),
            "date_text": day,
            "time": done.start.strftime("%H:%M"),
            "duration_min": done.duration_min,
            "name": done.name,
            "phone": done.phone,
            "text": text,
        }

    def _message(self, done: MessageTaken) -> Item:
        w = self._words
        recipient = (
            w.recipient_team.format(department=done.department)
            if done.department
            else done.recipient
        )
        hours = self._persona.demo_data.agency.opening_hours
        subject = w.message_subject.format(subject=done.subject) if done.subject else ""
        text = w.message.format(
            recipient=recipient,
            subject=subject,
            name=done.name,
            phone=done.phone,
            opening_hours=hours,
        )
        return {
            "type": "message",
            "recipient": done.recipient,
            "department": done.department,
            "subject": done.subject,
            "name": done.name,
            "phone": done.phone,
            "callback_hours": hours,
            "text": text,
        }

    def _incident(self, done: IncidentReported) -> Item:
        w = self._words
        kind = done.incident
        at = w.incident_at.format(address=done.address) if done.address else ""
        text = w.incident.format(
            incident=kind.label,
            at=at,
            reference=done.reference,
            name=done.name,
            phone=done.phone,
            response_time=kind.response_time,
        )
        return {
            "type": "incident",
            "reference": done.reference,
            "incident": kind.label,
            "urgency": kind.urgency,
            "address": done.address,
            "description": done.description,
            "response_time": kind.response_time,
            "advice": kind.advice,
            "name": done.name,
            "phone": done.phone,
            "text": text,
        }

    def _transfer(self, done: TransferSimulated) -> Item:
        return {
            "type": "transfer",
            "department": done.department,
            "simulated": True,
            "text": self._words.transfer.format(department=done.department),
        }
