"""The front desk behind the persona tools: searches and bookings over the persona's demo data.

Plain Python, no LiveKit: every answer is a small JSON-able dict the LLM reads back. Each
call gets its own desk, so a slot booked during a call is taken for the rest of that call
and forgotten when it ends (demo data is never written anywhere). Names and callback
numbers are checked for shape and are not in the answers. What the desk did (`actions`:
the viewings booked, messages taken, incidents logged, transfers) stays in this desk's
memory for the call, the caller's name and number with it, for the visitor's recap
(agent.recap) at the end; it goes with the desk when the call ends.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from agent.conversation import Calendar
from agents_catalog.models import IncidentType, Listing, Persona, VisitSlot

MAX_RESULTS = 3
MAX_ALTERNATIVES = 3
PHONE_DIGITS = (6, 15)

Answer = dict[str, Any]


def fold(text: str) -> str:
    """Lowercase without accents or punctuation, so "Croix Rousse" finds "Croix-Rousse"."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join(re.sub(r"[^a-z0-9]+", " ", bare).split())


def contact_problem(name: str, phone: str) -> Answer | None:
    """What to ask the caller again before a booking, message or incident, if anything."""
    if not name.strip():
        return {"status": "missing_name", "detail": "Ask the caller for a name first."}
    if not phone_ok(phone):
        return {
            "status": "invalid_phone",
            "detail": "Ask for the callback number again: it needs 6 to 15 digits.",
        }
    return None


def phone_ok(phone: str) -> bool:
    digits = re.sub(r"\D", "", phone)
    return PHONE_DIGITS[0] <= len(digits) <= PHONE_DIGITS[1]


def _reference(prefix: str) -> str:
    return f"{prefix}-{secrets.randbelow(9000) + 1000}"


@dataclass(frozen=True)
class ViewingBooked:
    reference: str
    listing: Listing
    day: date
    start: time
    duration_min: int
    name: str
    phone: str


@dataclass(frozen=True)
class MessageTaken:
    recipient: str  # the team, or the agency when no team was named
    department: str | None
    subject: str
    name: str
    phone: str


@dataclass(frozen=True)
class IncidentReported:
    reference: str
    incident: IncidentType
    address: str  # the managed building's address, or the place as the caller gave it
    description: str
    name: str
    phone: str


@dataclass(frozen=True)
class TransferSimulated:
    department: str


Action = ViewingBooked | MessageTaken | IncidentReported | TransferSimulated


@dataclass(frozen=True)
class Criteria:
    transaction: str | None = None
    kind: str | None = None
    area: str | None = None
    max_price_eur: int | None = None
    min_bedrooms: int | None = None
    min_rooms: int | None = None

    def misses(self, listing: Listing) -> list[str]:
        """The criteria this listing does not meet (empty: a match)."""
        missed = []
        if self.transaction and listing.transaction != self.transaction:
            missed.append("transaction")
        if self.kind and listing.kind != self.kind:
            missed.append("kind")
        if self.area:
            wanted = fold(self.area)
            where = fold(f"{listing.district} {listing.city}")
            # The whole place, or one of its significant words ("Pentes de la Croix-Rousse").
            words = [w for w in wanted.split() if len(w) > 3]
            if wanted not in where and not any(w in where.split() for w in words):
                missed.append("area")
        if self.max_price_eur is not None and listing.price_eur > self.max_price_eur:
            missed.append("max_price_eur")
        if self.min_bedrooms is not None and listing.bedrooms < self.min_bedrooms:
            missed.append("min_bedrooms")
        if self.min_rooms is not None and listing.rooms < self.min_rooms:
            missed.append("min_rooms")
        return missed


class DemoDesk:
    def __init__(self, persona: Persona, today: date, calendar: Calendar) -> None:
        self._persona = persona
        self._data = persona.demo_data
        self._today = today
        self._calendar = calendar
        self._booked: set[str] = set()
        self.actions: list[Action] = []

    @property
    def persona(self) -> Persona:
        return self._persona

    @property
    def calendar(self) -> Calendar:
        return self._calendar

    # --- listings ----------------------------------------------------------------------

    def _listing_card(self, listing: Listing) -> Answer:
        return {
            "ref": listing.ref,
            "transaction": listing.transaction,
            "kind": listing.kind,
            "district": listing.district,
            "city": listing.city,
            "rooms": listing.rooms,
            "bedrooms": listing.bedrooms,
            "surface_m2": listing.surface_m2,
            "price_eur": listing.price_eur,
            "price_is": "monthly rent including charges"
            if listing.transaction == "rent"
            else "sale price",
            "features": list(listing.features),
            "summary": listing.summary,
            "has_viewing_slots": any(s.listing_ref == listing.ref for s in self._data.visit_slots),
        }

    def find_listings(self, criteria: Criteria) -> Answer:
        listings = self._data.listings
        matches = sorted((x for x in listings if not criteria.misses(x)), key=lambda x: x.price_eur)
        if matches:
            return {
                "status": "found",
                "count": len(matches),
                "listings": [self._listing_card(x) for x in matches[:MAX_RESULTS]],
            }
        # Nothing matches: the closest listings (fewest criteria missed, never the other
        # transaction when one was asked for), each saying which criterion it misses, so
        # the agent can offer to widen exactly that one.
        near = [
            (missed, x)
            for x in listings
            if (missed := criteria.misses(x)) and "transaction" not in missed
        ]
        near.sort(key=lambda item: (len(item[0]), item[1].price_eur))
        return {
            "status": "no_match",
            "count": 0,
            "closest": [
                {**self._listing_card(x), "does_not_meet": missed}
                for missed, x in near[:MAX_ALTERNATIVES]
            ],
        }

    def listing(self, ref: str) -> Listing | None:
        wanted = ref.strip().upper()
        return next((x for x in self._data.listings if x.ref == wanted), None)

    # --- visits ------------------------------------------------------------------------

    def _slot_date(self, slot: VisitSlot) -> date:
        return self._today + timedelta(days=slot.day_offset)

    def _slot_card(self, slot: VisitSlot) -> Answer:
        day = self._slot_date(slot)
        return {
            "date": day.isoformat(),
            "said": self._calendar.say(day),
            "time": slot.start.strftime("%H:%M"),
            "duration_min": slot.duration_min,
        }

    def _free(self, slot: VisitSlot) -> bool:
        return not slot.taken and slot.id not in self._booked

    def _alternatives(self, ref: str, near: datetime) -> list[Answer]:
        free = [s for s in self._data.visit_slots if s.listing_ref == ref and self._free(s)]
        free.sort(
            key=lambda s: abs(
                (datetime.combine(self._slot_date(s), s.start) - near).total_seconds()
            )
        )
        return [self._slot_card(s) for s in free[:MAX_ALTERNATIVES]]

    def _find_slot(self, ref: str, day: str, at: str) -> tuple[str, VisitSlot | None, Answer]:
        """(status, slot, answer): status is "available" with the slot, or why not, with
        the free slots of that listing nearest to what was asked."""
        listing = self.listing(ref)
        if listing is None:
            return (
                "unknown_listing",
                None,
                {
                    "status": "unknown_listing",
                    "detail": "No listing has this reference; search with find_listings first.",
                },
            )
        ref = listing.ref
        near = datetime.combine(self._today, time(12, 0))
        status = ""
        wanted_day: date | None = None
        wanted_time: time | None = None
        try:
            wanted_day = date.fromisoformat(day.strip())
        except ValueError:
            status = "invalid_date"
        if not status:
            try:
                wanted_time = time.fromisoformat(at.strip())
            except ValueError:
                status = "invalid_time"
        if wanted_day is not None:
            near = datetime.combine(wanted_day, wanted_time or time(12, 0))
        slot = None
        if not status and wanted_day is not None and wanted_time is not None:
            if wanted_day < self._today:
                status = "date_in_the_past"
            else:
                slot = next(
                    (
                        s
                        for s in self._data.visit_slots
                        if s.listing_ref == ref
                        and self._slot_date(s) == wanted_day
                        and s.start == wanted_time
                    ),
                    None,
                )
                if slot is None:
                    status = "no_slot_at_that_time"
                elif not self._free(slot):
                    status, slot = "taken", None
                else:
                    status = "available"
        if status == "available" and slot is not None:
            return (
                status,
                slot,
                {
                    "status": "available",
                    "listing_ref": ref,
                    "slot": self._slot_card(slot),
                },
            )
        alternatives = self._alternatives(ref, near)
        answer: Answer = {"status": status, "listing_ref": ref, "alternatives": alternatives}
        if not alternatives:
            answer["detail"] = "This listing has no free viewing slot; offer to take a message."
        return status, None, answer

    def check_visit_slot(self, listing_ref: str, day: str, at: str) -> Answer:
        return self._find_slot(listing_ref, day, at)[2]

    def book_visit(self, listing_ref: str, day: str, at: str, name: str, phone: str) -> Answer:
        if problem := contact_problem(name, phone):
            return problem
        status, slot, answer = self._find_slot(listing_ref, day, at)
        if status != "available" or slot is None:
            return answer
        self._booked.add(slot.id)
        listing = self.listing(listing_ref)
        assert listing is not None
        reference = _reference("VIS")
        self.actions.append(
            ViewingBooked(reference, listing, self._slot_date(slot), slot.start,
                          slot.duration_min, name.strip(), phone.strip())
        )  # fmt: skip
        return {
            "status": "booked",
            "reference": reference,
            "slot": self._slot_card(slot),
            "listing": {"kind": listing.kind, "district": listing.district, "city": listing.city},
            "detail": "An agent will meet the caller at the property; a confirmation would be "
            "sent by text message in the real service.",
        }

    # --- messages, transfers, incidents -----------------------------------------------

    def take_message(
        self, name: str, phone: str, department: str | None, subject: str = ""
    ) -> Answer:
        if problem := contact_problem(name, phone):
            return problem
        departments = self._data.transfer_departments
        if department and departments and department not in departments:
            return {"status": "unknown_department", "departments": list(departments)}
        # Nobody will call back in the demo: the message goes no further than this call's
        # recap, shown to the caller who left it.
        recipient = department or self._data.agency.name
        self.actions.append(
            MessageTaken(recipient, department, subject.strip(), name.strip(), phone.strip())
        )
        return {
            "status": "message_taken",
            "for": recipient,
            "callback": f"during opening hours ({self._data.agency.opening_hours})",
        }

    def transfer_to_human(self, department: str) -> Answer:
        departments = self._data.transfer_departments
        if department not in departments:
            return {"status": "unknown_department", "departments": list(departments)}
        self.actions.append(TransferSimulated(department))
        return {
            "status": "simulated_transfer",
            "department": department,
            "detail": "This is a demo: nobody is on the other end. Tell the caller that in the "
            f"real service they would now be put through to {department}, then offer to take "
            "a message instead.",
        }

    def _building(self, location: str) -> Any | None:
        wanted = fold(location)
        if len(wanted) < 4:
            return None
        for building in self._data.buildings:
            if fold(building.ref) in wanted:
                return building
            for part in building.address.split(","):
                key = fold(part)
                if re.search(r"\b\d{5}\b", key) or len(key) < 5:
                    continue  # "75017 Paris" names a district, not a building
                if key in wanted or wanted in key:
                    return building
        return None

    def report_incident(
        self, incident_code: str, location: str, name: str, phone: str, description: str = ""
    ) -> Answer:
        kinds = {t.code: t for t in self._data.incident_types}
        incident = kinds.get(incident_code)
        if incident is None:
            return {"status": "unknown_incident_type", "incident_types": sorted(kinds)}
        if problem := contact_problem(name, phone):
            return problem
        answer: Answer = {"urgency": incident.urgency}
        address = location.strip()
        if self._data.buildings:
            building = self._building(location)
            if building is None:
                return {
                    "status": "not_managed",
                    "detail": "This address is not one of the buildings we manage.",
                    "managed_buildings": [b.address for b in self._data.buildings],
                }
            answer["building"] = address = building.address
            if building.caretaker:
                answer["caretaker"] = building.caretaker
        reference = _reference("INC")
        self.actions.append(
            IncidentReported(reference, incident, address, description.strip(), name.strip(),
                             phone.strip())
        )  # fmt: skip
        return {
            "status": "logged",
            "reference": reference,
            "incident": incident.label,
            **answer,
            "advice": incident.advice,
            "response_time": incident.response_time,
        }
