"""The visitor's recap, built from what the tools really did, in the call's language: calls
driven through AgentSession.run() by the scripted LLM (tests/agent/support.py), each with
tool calls that succeed and tool calls the desk refuses. The recap holds exactly the ones
that succeeded, with the tools' own references, dates and times."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from livekit import rtc
from livekit.agents import llm

from agent.page_signals import PageSignals, latency_message, reply_latency
from agent.recap import RECAP_VERSION
from tests.agent.support import CATALOG, TODAY, finished, running_call, tool_outputs
from tests.fakes.llm_script import Reply, Script, ToolCall, Turn

TOMORROW = (TODAY + timedelta(days=1)).isoformat()


def _persona(persona_id: str) -> Any:
    persona = CATALOG.get(persona_id)
    assert persona is not None
    return persona


async def _run_call(
    persona_id: str, script: Script, lines: list[str]
) -> tuple[Any, dict[str, list[dict[str, Any]]]]:
    """Say each line in turn, end the call; (the call's parts, each tool's outputs)."""
    outputs: dict[str, list[dict[str, Any]]] = {}
    async with running_call(persona_id, script) as (parts, scripted):
        for line in lines:
            result = await parts.session.run(user_input=line)
            for name in ("book_visit", "take_message", "transfer_to_human", "report_incident"):
                outputs.setdefault(name, []).extend(tool_outputs(result, name))
        await finished(parts)
    assert scripted.errors == []
    assert parts.call.end_reason == "end_call"
    return parts, outputs


def _statuses(outputs: dict[str, list[dict[str, Any]]], name: str) -> list[str]:
    return [o["status"] for o in outputs[name]]


async def test_french_recap_holds_the_booking_the_message_and_the_transfer_that_happened():
    booking = {"listing_ref": "LYO-101", "date": TOMORROW, "time": "10:30",
               "name": "Marie Dupont", "phone": "06 98 76 54 32"}  # fmt: skip
    message = {"name": "Marie Dupont", "phone": "06 98 76 54 32", "department": "syndic",
               "subject": "Question sur les charges de copropriété"}  # fmt: skip
    script = Script(
        Turn("visite", Reply(tools=(ToolCall("book_visit", {**booking, "phone": "12"}),)),
             Reply(tools=(ToolCall("book_visit", {**booking, "time": "03:00"}),)),
             Reply(tools=(ToolCall("book_visit", booking),)),
             Reply("C'est réservé.")),
        Turn("message",
             Reply(tools=(ToolCall("take_message", {**message, "department": "compta"}),)),
             Reply(tools=(ToolCall("take_message", message),)),
             Reply("C'est noté.")),
        Turn("quelqu'un",
             Reply(tools=(ToolCall("transfer_to_human", {"department": "direction"}),)),
             Reply(tools=(ToolCall("transfer_to_human", {"department": "gestion locative"}),)),
             Reply("Je vous transfère.")),
        Turn("au revoir", Reply("Au revoir !", tools=(ToolCall("end_call"),))),
    )  # fmt: skip
    lines = ["Je voudrais une visite", "Je laisse un message", "Je veux parler à quelqu'un",
             "Merci, au revoir"]  # fmt: skip
    parts, outputs = await _run_call("agence-immo-fr", script, lines)

    # The desk refused the first attempts of each; only what it did is in the recap.
    assert _statuses(outputs, "book_visit") == ["invalid_phone", "no_slot_at_that_time", "booked"]
    assert _statuses(outputs, "take_message") == ["unknown_department", "message_taken"]
    assert _statuses(outputs, "transfer_to_human") == ["unknown_department", "simulated_transfer"]
    booked = outputs["book_visit"][-1]
    recap = parts.recap(parts.call.end_reason.value)
    hours = _persona("agence-immo-fr").demo_data.agency.opening_hours
    assert recap == {
        "v": RECAP_VERSION,
        "lang": "fr",
        "end_reason": "end_call",
        "items": [
            {"type": "viewing", "reference": booked["reference"], "listing_ref": "LYO-101",
             "property": "apartment", "transaction": "sale", "place": "Croix-Rousse, Lyon",
             "date": TOMORROW, "date_text": "samedi 28 novembre 2026", "time": "10:30",
             "duration_min": booked["slot"]["duration_min"], "name": "Marie Dupont",
             "phone": "06 98 76 54 32",
             "text": "Visite réservée : appartement à Croix-Rousse, Lyon, le samedi 28 novembre "
                     f"2026 à 10 h 30 (référence {booked['reference']}), au nom de Marie "
                     "Dupont, joignable au 06 98 76 54 32."},
            {"type": "message", "recipient": "syndic", "department": "syndic",
             "subject": "Question sur les charges de copropriété", "name": "Marie Dupont",
             "phone": "06 98 76 54 32", "callback_hours": hours,
             "text": "Message laissé pour le service syndic : « Question sur les charges de "
                     "copropriété », au nom de Marie Dupont, à rappeler au 06 98 76 54 32 aux "
                     f"heures d'ouverture ({hours})."},
            {"type": "transfer", "department": "gestion locative", "simulated": True,
             "text": "Transfert vers le service gestion locative, simulé dans cette "
                     "démonstration."},
        ],
    }  # fmt: skip
    # The tool's own date and time, as it told the model.
    assert (booked["slot"]["date"], booked["slot"]["time"]) == (TOMORROW, "10:30")
    json.dumps(recap)  # goes on the wire as it is


async def test_english_recap_of_a_booking_and_a_message_for_the_agency():
    booking = {"listing_ref": "BDX-201", "date": TOMORROW, "time": "11:00", "name": "John Smith",
               "phone": "06 12 34 56 78"}  # fmt: skip
    message = {"name": "John Smith", "phone": "06 12 34 56 78", "subject": "A valuation",
               "department": None}  # fmt: skip
    script = Script(
        Turn("viewing", Reply(tools=(ToolCall("book_visit", booking),)), Reply("Booked.")),
        Turn("again", Reply(tools=(ToolCall("book_visit", booking),)), Reply("It's gone.")),
        Turn("message", Reply(tools=(ToolCall("take_message", message),)), Reply("Noted.")),
        Turn("bye", Reply(tools=(ToolCall("end_call"),))),
    )  # fmt: skip
    parts, outputs = await _run_call(
        "realty-desk-en", script, ["A viewing please", "Book it again", "A message", "bye"]
    )
    assert _statuses(outputs, "book_visit") == ["booked", "taken"]  # booked once only
    booked = outputs["book_visit"][0]
    agency = _persona("realty-desk-en").demo_data.agency
    recap = parts.recap("end_call")
    assert recap["lang"] == "en"
    viewing, note = recap["items"]
    assert viewing["reference"] == booked["reference"]
    assert (viewing["date"], viewing["time"]) == (booked["slot"]["date"], booked["slot"]["time"])
    assert viewing["place"] == f"{booked['listing']['district']}, {booked['listing']['city']}"
    assert viewing["text"] == (
        "Viewing booked: flat in Chartrons, Bordeaux, Saturday 28 November 2026 at 11:00 "
        f"(reference {booked['reference']}), for John Smith, on 06 12 34 56 78."
    )
    assert note == {
        "type": "message", "recipient": agency.name, "department": None,
        "subject": "A valuation", "name": "John Smith", "phone": "06 12 34 56 78",
        "callback_hours": agency.opening_hours,
        "text": f'Message left for {agency.name}: "A valuation", from John Smith, to be called '
                f"back on 06 12 34 56 78 during opening hours ({agency.opening_hours}).",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("persona_id", "refused", "location", "address"),
    [("gestion-incidents-fr", "3 avenue Foch", "14 rue Lemercier, 3e étage",
      "Résidence Les Tilleuls, 14 rue Lemercier, 75017 Paris"),
     ("after-hours-en", None, "12 avenue Jean Médecin, Nice", "12 avenue Jean Médecin, Nice")],
)  # fmt: skip
async def test_recap_of_an_incident_has_its_reference_and_where_it_is(
    persona_id, refused, location, address
):
    incident = _persona(persona_id).demo_data.incident_types[0]
    args = {"incident_code": incident.code, "location": location, "description": "under the sink",
            "name": "Léa Martin", "phone": "06 98 76 54 32"}  # fmt: skip
    refusal = [Reply(tools=(ToolCall("report_incident", {**args, "location": refused}),))] \
        if refused else []  # fmt: skip
    script = Script(
        Turn("leak", *refusal, Reply(tools=(ToolCall("report_incident", args),)), Reply("Logged.")),
        Turn("bye", Reply("Goodbye.", tools=(ToolCall("end_call"),))),
    )
    parts, outputs = await _run_call(persona_id, script, ["A leak", "bye"])
    logged = outputs["report_incident"][-1]
    assert logged["status"] == "logged"
    if refused:
        assert _statuses(outputs, "report_incident") == ["not_managed", "logged"]
    [item] = parts.recap("end_call")["items"]
    assert item == {
        "type": "incident", "reference": logged["reference"], "incident": incident.label,
        "urgency": incident.urgency, "address": address, "description": "under the sink",
        "response_time": incident.response_time, "advice": incident.advice,
        "name": "Léa Martin", "phone": "06 98 76 54 32", "text": item["text"],
    }  # fmt: skip
    if persona_id.endswith("-fr"):
        assert item["text"] == (
            f"Incident signalé : {incident.label}, {address} (référence {logged['reference']}), "
            f"par Léa Martin, joignable au 06 98 76 54 32. {incident.response_time}"
        )
    else:
        assert item["text"] == (
            f"Incident reported: {incident.label}, {address} (reference {logged['reference']}), "
            f"by Léa Martin, on 06 98 76 54 32. {incident.response_time}"
        )


async def test_a_call_where_nothing_was_done_has_an_empty_recap():
    script = Script(Turn("hours", Reply("We open at nine.")),
                    Turn("bye", Reply(tools=(ToolCall("end_call"),))))  # fmt: skip
    parts, _ = await _run_call("realty-desk-en", script, ["What are your hours?", "bye"])
    assert parts.recap("silence") == {"v": 1, "lang": "en", "end_reason": "silence", "items": []}


def test_reply_latency_is_the_frameworks_e2e_latency_of_agent_replies_only():
    reply = llm.ChatMessage(role="assistant", content=["Yes."], metrics={"e2e_latency": 0.8731})
    assert reply_latency(reply) == pytest.approx(0.8731)
    assert latency_message(0.8731) == {"v": 1, "seconds": 0.873}
    greeting = llm.ChatMessage(role="assistant", content=["Hello."])  # said, not an answer
    heard = llm.ChatMessage(role="user", content=["Hi"], metrics={"stopped_speaking_at": 1.0})
    early = llm.ChatMessage(role="assistant", content=["Hm"], metrics={"e2e_latency": -0.1})
    assert [reply_latency(m) for m in (greeting, heard, early)] == [None, None, None]


async def test_nothing_is_sent_to_a_room_the_visitor_is_not_in():
    signals = PageSignals(rtc.Room())  # never connected: nobody to send to
    assert await signals.send_recap({"v": 1, "items": []}) is False
