"""Every persona, driven through AgentSession.run() by a scripted LLM: the greeting, the
prompt and tools it gets, a booking through the tools, a slot that cannot be had, a
message, an incident, and end_call ending the session."""

from __future__ import annotations

from datetime import timedelta

import pytest

from agent.conversation import default_conversation
from agents_catalog.models import Listing, Persona, VisitSlot
from tests.agent.support import CATALOG, TODAY, finished, running_call, said, tool_outputs
from tests.fakes.llm_script import Reply, Script, ToolCall, Turn

CONVERSATION = default_conversation()
ALL = [p.id for p in CATALOG]
BOOKERS = [p.id for p in CATALOG if "book_visit" in p.tools]
INCIDENTS = [p.id for p in CATALOG if "report_incident" in p.tools]
# The opening word of each language's framing, checked in the prompt the LLM receives.
FRAMING_START = {"fr": "Cadre de la démonstration.", "en": "Demo framing."}
FR_WORDS = {"le", "la", "les", "de", "des", "du", "vous", "à", "est", "je", "ce", "qui", "une",
            "pour", "votre", "et", "ou", "dites", "moi", "c'est"}  # fmt: skip
EN_WORDS = {"the", "you", "is", "are", "to", "of", "and", "this", "it", "or", "how", "can",
            "i", "what", "your", "about", "something"}  # fmt: skip


def language_of(text: str) -> str:
    """fr or en, from the function words a sentence uses (enough for a greeting)."""
    words = [w.strip(".,?!:;") for w in text.lower().replace("'", "' ").split()]
    fr = sum(w in FR_WORDS or w.endswith("'") for w in words)
    en = sum(w in EN_WORDS for w in words)
    return "fr" if fr > en else "en"


def persona(persona_id: str) -> Persona:
    found = CATALOG.get(persona_id)
    assert found is not None
    return found


@pytest.mark.parametrize("persona_id", ALL)
async def test_greeting_comes_first_with_no_llm_round_trip(persona_id):
    p = persona(persona_id)
    script = Script(
        Turn("bonjour", Reply("Je vous écoute.")), Turn("hello", Reply("I'm listening."))
    )
    async with running_call(persona_id, script) as (parts, scripted):
        assert said(parts) == [p.greeting]
        assert language_of(said(parts)[0]) == p.language
        assert scripted.requests == []  # the first word needed no LLM request
        await parts.session.run(user_input="hello" if p.language == "en" else "bonjour")
        request = scripted.requests[0]
        # The persona's own instructions, then the framing in its language, with the
        # agency facts taken from its demo data.
        assert request.instructions.startswith(p.instructions.rstrip())
        assert FRAMING_START[p.language] in request.instructions
        agency = p.demo_data.agency
        for fact in (agency.name, agency.address, agency.opening_hours, agency.phone_display,
                     *p.demo_data.transfer_departments):  # fmt: skip
            assert fact in request.instructions
        day = CONVERSATION.calendar[p.language].say(TODAY)
        assert day in request.instructions
        assert sorted(request.tools) == sorted(p.tools)
        assert scripted.errors == []


def _booking_case(persona_id: str) -> tuple[Persona, VisitSlot, VisitSlot, Listing]:
    p = persona(persona_id)
    slots = p.demo_data.visit_slots
    free = next(s for s in slots if not s.taken)
    taken = next(s for s in slots if s.taken)
    listing = next(x for x in p.demo_data.listings if x.ref == free.listing_ref)
    return p, free, taken, listing


@pytest.mark.parametrize("persona_id", BOOKERS)
async def test_booking_flow_through_the_tools(persona_id):
    p, free, _taken, listing = _booking_case(persona_id)
    day = (TODAY + timedelta(days=free.day_offset)).isoformat()
    at = free.start.strftime("%H:%M")
    search = {
        "transaction": listing.transaction,
        "kind": None,
        "area": listing.district,
        "max_price_eur": listing.price_eur,
        "min_bedrooms": None,
        "min_rooms": None,
    }
    slot = {"listing_ref": listing.ref, "date": day, "time": at}
    who = {"name": "Alex Martin", "phone": "06 12 34 56 78"}
    script = Script(
        Turn("looking for", Reply(tools=(ToolCall("find_listings", search),)),
             Reply("I have one that fits.")),
        Turn("viewing", Reply("Let me check.", tools=(ToolCall("check_visit_slot", slot),)),
             Reply("That time is free.")),
        Turn("book it", Reply(tools=(ToolCall("book_visit", {**slot, **who}),)),
             Reply("Your viewing is confirmed.")),
        Turn("same slot", Reply(tools=(ToolCall("book_visit", {**slot, **who}),)),
             Reply("That one has just gone.")),
    )  # fmt: skip
    async with running_call(persona_id, script) as (parts, scripted):
        result = await parts.session.run(user_input="I am looking for a home")
        found = tool_outputs(result, "find_listings")[0]
        assert found["status"] == "found"
        assert listing.ref in [x["ref"] for x in found["listings"]]
        result.expect.contains_message(role="assistant")

        result = await parts.session.run(user_input="Can I have a viewing?")
        assert tool_outputs(result, "check_visit_slot") == [
            {"status": "available", "listing_ref": listing.ref,
             "slot": {"date": day, "said": CONVERSATION.calendar[p.language].say(
                 TODAY + timedelta(days=free.day_offset)), "time": at,
                 "duration_min": free.duration_min}}
        ]  # fmt: skip

        result = await parts.session.run(user_input="Please book it")
        booked = tool_outputs(result, "book_visit")[0]
        assert booked["status"] == "booked" and booked["slot"]["time"] == at
        assert booked["listing"]["district"] == listing.district

        # Booked in this call: asking for it again gets the next free slots instead.
        result = await parts.session.run(user_input="Book the same slot again")
        again = tool_outputs(result, "book_visit")[0]
        assert again["status"] == "taken"
        assert (day, at) not in [(a["date"], a["time"]) for a in again["alternatives"]]
        assert said(parts)[-1] == "That one has just gone."
        assert scripted.errors == []


@pytest.mark.parametrize("persona_id", BOOKERS)
async def test_taken_or_impossible_slot_gets_free_alternatives(persona_id):
    p, _free, taken, _listing = _booking_case(persona_id)
    taken_day = (TODAY + timedelta(days=taken.day_offset)).isoformat()
    asks = [
        ("taken", {"listing_ref": taken.listing_ref, "date": taken_day,
                   "time": taken.start.strftime("%H:%M")}),
        ("no_slot_at_that_time", {"listing_ref": taken.listing_ref, "date": taken_day,
                                  "time": "03:00"}),
        ("date_in_the_past", {"listing_ref": taken.listing_ref,
                              "date": (TODAY - timedelta(days=3)).isoformat(), "time": "10:00"}),
    ]  # fmt: skip
    script = Script(*(Turn(f"case {status}", Reply(tools=(ToolCall("check_visit_slot", args),)),
                           Reply("Another time then?"))
                      for status, args in asks))  # fmt: skip
    free_ids = {
        ((TODAY + timedelta(days=s.day_offset)).isoformat(), s.start.strftime("%H:%M"))
        for s in p.demo_data.visit_slots
        if s.listing_ref == taken.listing_ref and not s.taken
    }
    async with running_call(persona_id, script) as (parts, scripted):
        for status, _args in asks:
            result = await parts.session.run(user_input=f"case {status}")
            answer = tool_outputs(result, "check_visit_slot")[0]
            assert answer["status"] == status
            offered = {(a["date"], a["time"]) for a in answer["alternatives"]}
            assert offered and offered <= free_ids
        assert scripted.errors == []


@pytest.mark.parametrize("persona_id", ALL)
async def test_message_taken_with_callback_number(persona_id):
    p = persona(persona_id)
    department = p.demo_data.transfer_departments[0]
    args = {"name": "Camille Petit", "phone": "07 81 22 33 44", "subject": "call me back",
            "department": department}  # fmt: skip
    script = Script(
        Turn("message", Reply(tools=(ToolCall("take_message", {**args, "phone": "12"}),)),
             Reply(tools=(ToolCall("take_message", args),)),
             Reply("Your message is noted.")),
    )  # fmt: skip
    async with running_call(persona_id, script) as (parts, scripted):
        result = await parts.session.run(user_input="I'd like to leave a message")
        first, second = tool_outputs(result, "take_message")
        assert first["status"] == "invalid_phone"  # the number is asked again
        assert second["status"] == "message_taken" and second["for"] == department
        assert said(parts)[-1] == "Your message is noted."
        assert scripted.errors == []


@pytest.mark.parametrize("persona_id", ALL)
async def test_transfer_is_simulated(persona_id):
    p = persona(persona_id)
    department = p.demo_data.transfer_departments[-1]
    transfer = ToolCall("transfer_to_human", {"department": department})
    reply = Reply("In the real service you would be put through now.")
    script = Script(Turn("someone", Reply(tools=(transfer,)), reply))
    async with running_call(persona_id, script) as (parts, scripted):
        result = await parts.session.run(user_input="Can I talk to someone?")
        answer = tool_outputs(result, "transfer_to_human")[0]
        assert answer["status"] == "simulated_transfer" and answer["department"] == department
        assert not parts.call.ending  # a transfer never hangs up the demo
        assert scripted.errors == []


@pytest.mark.parametrize("persona_id", INCIDENTS)
async def test_incident_reported_with_advice(persona_id):
    p = persona(persona_id)
    incident = p.demo_data.incident_types[0]
    location = p.demo_data.buildings[0].address if p.demo_data.buildings else "5 rue de France"
    args = {"incident_code": incident.code, "location": location, "description": "water",
            "name": "Sam Lee", "phone": "06 55 44 33 22"}  # fmt: skip
    script = Script(Turn("water", Reply(tools=(ToolCall("report_incident", args),)),
                         Reply("It is logged; here is what to do.")))  # fmt: skip
    async with running_call(persona_id, script) as (parts, scripted):
        result = await parts.session.run(user_input="There is water everywhere")
        answer = tool_outputs(result, "report_incident")[0]
        assert answer["status"] == "logged"
        assert answer["advice"] == incident.advice
        assert answer["response_time"] == incident.response_time
        assert scripted.errors == []


@pytest.mark.parametrize("persona_id", ALL)
async def test_end_call_after_the_models_goodbye_says_it_once(persona_id):
    goodbye = "Thank you, goodbye!"
    script = Script(Turn("bye", Reply(goodbye, tools=(ToolCall("end_call"),))))
    async with running_call(persona_id, script) as (parts, scripted):
        await parts.session.run(user_input="That's all, bye")
        await finished(parts)
        assert parts.call.end_reason == "end_call"
        assert said(parts)[1:] == [goodbye]  # greeting, then one goodbye: no second one
        assert parts.call.record["end_reason"] == "end_call"
        assert scripted.errors == []


@pytest.mark.parametrize("persona_id", ALL)
async def test_end_call_without_a_goodbye_gets_the_persona_language_goodbye(persona_id):
    p = persona(persona_id)
    script = Script(Turn("bye", Reply(tools=(ToolCall("end_call"),))))
    async with running_call(persona_id, script) as (parts, _scripted):
        await parts.session.run(user_input="bye")
        await finished(parts)
        assert parts.call.end_reason == "end_call"
        assert said(parts)[-1] == CONVERSATION.phrases[p.language].goodbye
        assert said(parts).count(CONVERSATION.phrases[p.language].goodbye) == 1
