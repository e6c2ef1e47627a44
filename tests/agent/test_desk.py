"""The front desk behind the persona tools, over the shipped personas' demo data."""

from __future__ import annotations

from datetime import timedelta

import pytest

from agent.conversation import default_conversation
from agent.desk import Criteria, DemoDesk, fold, phone_ok
from tests.agent.support import CATALOG, TODAY


def desk(persona_id: str) -> DemoDesk:
    persona = CATALOG.get(persona_id)
    assert persona is not None
    return DemoDesk(persona, TODAY, default_conversation().calendar[persona.language])


def test_fold_ignores_accents_case_and_dashes():
    assert fold("Croix Rousse") in fold("Croix-Rousse")
    assert fold("CAUDERAN") == fold("Caudéran")


@pytest.mark.parametrize(
    ("phone", "ok"), [("06 12 34 56 78", True), ("+33 6 12 34 56 78", True), ("12", False),
                      ("call me", False), ("1" * 16, False)],
)  # fmt: skip
def test_phone_shape(phone, ok):
    assert phone_ok(phone) is ok


def test_find_listings_by_criteria_sorted_by_price():
    found = desk("agence-immo-fr").find_listings(Criteria(transaction="rent"))
    prices = [x["price_eur"] for x in found["listings"]]
    assert found["status"] == "found" and found["count"] == 4
    assert prices == sorted(prices) and len(prices) == 3  # at most three read out
    one = desk("agence-immo-fr").find_listings(
        Criteria(transaction="sale", area="croix rousse", max_price_eur=400_000, min_rooms=3)
    )
    assert [x["ref"] for x in one["listings"]] == ["LYO-101"]
    assert one["listings"][0]["has_viewing_slots"] is True


def test_no_match_offers_the_closest_and_says_what_they_miss():
    answer = desk("agence-immo-fr").find_listings(
        Criteria(transaction="sale", area="Croix-Rousse", max_price_eur=200_000)
    )
    assert answer["status"] == "no_match" and answer["count"] == 0
    closest = answer["closest"]
    assert closest and all(x["transaction"] == "sale" for x in closest)
    assert closest[0]["ref"] == "LYO-101" and closest[0]["does_not_meet"] == ["max_price_eur"]


def test_free_slot_is_available_and_booking_takes_it_for_the_rest_of_the_call():
    d = desk("realty-desk-en")
    day = (TODAY + timedelta(days=1)).isoformat()
    assert d.check_visit_slot("BDX-201", day, "11:00")["status"] == "available"
    booked = d.book_visit("BDX-201", day, "11:00", "Alex", "06 11 22 33 44")
    assert booked["status"] == "booked" and booked["reference"].startswith("VIS-")
    assert booked["slot"] == {"date": day, "said": "Saturday 28 November 2026", "time": "11:00",
                              "duration_min": 30}  # fmt: skip
    again = d.check_visit_slot("BDX-201", day, "11:00")
    assert again["status"] == "taken"
    assert [a["time"] for a in again["alternatives"]] == ["17:30"]
    # A new call starts from the demo data again (nothing was written anywhere).
    assert desk("realty-desk-en").check_visit_slot("BDX-201", day, "11:00")["status"] == "available"


@pytest.mark.parametrize(
    ("day_offset", "at", "status"),
    [(1, "18:00", "taken"), (1, "03:00", "no_slot_at_that_time"), (-1, "12:30", "date_in_the_past"),
     (None, "12:30", "invalid_date"), (2, "midi", "invalid_time")],
)  # fmt: skip
def test_a_slot_that_cannot_be_booked_comes_with_free_alternatives(day_offset, at, status):
    d = desk("agence-immo-fr")
    day = "demain" if day_offset is None else (TODAY + timedelta(days=day_offset)).isoformat()
    answer = d.check_visit_slot("LYO-102", day, at)
    assert answer["status"] == status
    # LYO-102's only free slot (VIS-04, day 2 at 12:30) is offered; the taken one never is.
    assert [(a["date"], a["time"]) for a in answer["alternatives"]] == [
        ((TODAY + timedelta(days=2)).isoformat(), "12:30")
    ]
    assert answer["alternatives"][0]["said"] == "dimanche 29 novembre 2026"
    booked = d.book_visit("LYO-102", day, at, "Jean", "06 12 34 56 78")
    assert booked["status"] == status  # booking refuses the same way, with the same offer


def test_listing_without_free_slot_and_unknown_listing():
    d = desk("agence-immo-fr")
    none_free = d.check_visit_slot("LYO-107", (TODAY + timedelta(days=1)).isoformat(), "10:00")
    assert none_free["alternatives"] == [] and "message" in none_free["detail"]
    assert d.check_visit_slot("XX-1", "2026-11-28", "10:00")["status"] == "unknown_listing"


def test_booking_needs_a_name_and_a_plausible_number():
    d = desk("agence-immo-fr")
    day = (TODAY + timedelta(days=1)).isoformat()
    assert d.book_visit("LYO-101", day, "10:30", " ", "0612345678")["status"] == "missing_name"
    assert d.book_visit("LYO-101", day, "10:30", "Jean", "12")["status"] == "invalid_phone"
    assert d.check_visit_slot("LYO-101", day, "10:30")["status"] == "available"  # not taken


def test_message_transfer_and_their_refusals():
    d = desk("agence-immo-fr")
    taken = d.take_message("Jean", "06 12 34 56 78", "syndic")
    assert taken == {"status": "message_taken", "for": "syndic",
                     "callback": "during opening hours (Du lundi au vendredi de 9 h à 19 h, "
                                 "le samedi de 9 h 30 à 17 h)"}  # fmt: skip
    assert d.take_message("Jean", "06 12 34 56 78", "compta")["status"] == "unknown_department"
    transfer = d.transfer_to_human("gestion locative")
    assert transfer["status"] == "simulated_transfer" and "demo" in transfer["detail"]
    assert d.transfer_to_human("direction")["departments"] == [
        "transaction", "gestion locative", "syndic"]  # fmt: skip


def test_incident_in_a_managed_building_gets_advice_and_response_time():
    d = desk("gestion-incidents-fr")
    persona = CATALOG.get("gestion-incidents-fr")
    assert persona is not None
    leak = persona.demo_data.incident_types[0]
    logged = d.report_incident(leak.code, "14 rue Lemercier, 3e étage", "Léa", "06 98 76 54 32")
    assert logged["status"] == "logged" and logged["reference"].startswith("INC-")
    assert logged["advice"] == leak.advice and logged["response_time"] == leak.response_time
    assert logged["caretaker"].startswith("Mme Ferreira")
    assert d.report_incident(leak.code, "Résidence Convention", "Léa", "0698765432")["building"] \
        .startswith("Résidence Convention")  # fmt: skip
    outside = d.report_incident(leak.code, "3 avenue Foch", "Léa", "06 98 76 54 32")
    assert outside["status"] == "not_managed" and len(outside["managed_buildings"]) == 4
    assert d.report_incident("meteorite", "8 rue Nollet", "Léa", "0698765432")["status"] == (
        "unknown_incident_type"
    )


def test_after_hours_line_logs_any_address():
    d = desk("after-hours-en")
    logged = d.report_incident(
        "water_leak", "12 avenue Jean Médecin, Nice", "Sam", "07 00 11 22 33"
    )
    assert logged["status"] == "logged" and logged["urgency"] == "emergency"
    assert "building" not in logged
