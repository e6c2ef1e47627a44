"""The persona's tools as LLM function tools (JSON schemas built from its demo data).

Each persona declares which tools it has (agents_catalog ToolName); the schemas carry the
persona's own choices (its departments, incident types, listing kinds) as enums, so the
model cannot invent a team or an incident type. The work is done by agent.desk.DemoDesk;
`end_call` hands over to the call (agent.call.Call), which says goodbye only when the
model has not just said it, then hangs up.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from livekit.agents import RunContext, function_tool
from livekit.agents.llm import RawFunctionTool

from agent.desk import Criteria, DemoDesk
from agents_catalog.models import Persona


class Hangup(Protocol):
    def end_call_from_tool(self, context: RunContext[Any]) -> Awaitable[None]: ...


def _nullable(kind: str | list[str], description: str, **extra: Any) -> dict[str, Any]:
    types = [kind] if isinstance(kind, str) else list(kind)
    schema: dict[str, Any] = {"type": [*types, "null"], "description": description, **extra}
    if "enum" in extra:
        schema["enum"] = [*extra["enum"], None]
    return schema


def _schema(name: str, description: str, properties: dict[str, Any]) -> dict[str, Any]:
    # OpenAI strict mode: every property required (optional ones are nullable), no extras.
    return {
        "name": name,
        "description": description,
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        },
    }


def _text(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    return value.strip() if isinstance(value, str) else ""


def _int(args: dict[str, Any], key: str) -> int | None:
    value = args.get(key)
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    return None


Handler = Callable[[dict[str, Any]], dict[str, Any]]


def _tool(schema: dict[str, Any], handler: Handler) -> RawFunctionTool[Any, Any]:
    async def run(raw_arguments: dict[str, object]) -> str:
        return json.dumps(handler(dict(raw_arguments)), ensure_ascii=False)

    return function_tool(run, raw_schema=schema)


def _slot_props(refs: list[str]) -> dict[str, Any]:
    """A viewing slot as the caller names it: which listing, which day, which time."""
    return {
        "listing_ref": {"type": "string", "enum": refs, "description": "Listing ref."},
        "date": {"type": "string", "description": "Date of the slot, YYYY-MM-DD."},
        "time": {"type": "string", "description": "Start time of the slot, HH:MM."},
    }


def _phone_props() -> dict[str, Any]:
    return {
        "name": {"type": "string", "description": "The caller's name as they gave it."},
        "phone": {
            "type": "string",
            "description": "The callback number the caller gave (digits, spaces allowed).",
        },
    }


def build_tools(persona: Persona, desk: DemoDesk, hangup: Hangup) -> list[Any]:
    data = persona.demo_data
    kinds = sorted({x.kind for x in data.listings})
    refs = [x.ref for x in data.listings]
    departments = list(data.transfer_departments)
    tools: list[Any] = []

    for name in persona.tools:
        if name == "find_listings":
            schema = _schema(
                "find_listings",
                "Search the agency's listings. Use null for any criterion the caller did not "
                "give. Returns the matching listings, or the closest ones and which criterion "
                "each does not meet.",
                {
                    "transaction": _nullable(
                        "string", "Buy (sale) or rent.", enum=["sale", "rent"]
                    ),
                    "kind": _nullable("string", "Type of property.", enum=kinds),
                    "area": _nullable("string", "District, neighbourhood or town wanted."),
                    "max_price_eur": _nullable(
                        "integer", "Budget in euros: sale price, or monthly rent for a rental."
                    ),
                    "min_bedrooms": _nullable("integer", "Minimum number of bedrooms."),
                    "min_rooms": _nullable("integer", "Minimum number of rooms (French 'pièces')."),
                },
            )

            def find(args: dict[str, Any]) -> dict[str, Any]:
                return desk.find_listings(
                    Criteria(
                        transaction=args.get("transaction") or None,
                        kind=args.get("kind") or None,
                        area=_text(args, "area") or None,
                        max_price_eur=_int(args, "max_price_eur"),
                        min_bedrooms=_int(args, "min_bedrooms"),
                        min_rooms=_int(args, "min_rooms"),
                    )
                )

            tools.append(_tool(schema, find))

        elif name == "check_visit_slot":
            schema = _schema(
                "check_visit_slot",
                "Check whether a viewing of a listing is possible at a date and time. If the slot "
                "is taken or does not exist, returns the nearest free slots to offer instead.",
                _slot_props(refs),
            )

            def check(args: dict[str, Any]) -> dict[str, Any]:
                return desk.check_visit_slot(
                    _text(args, "listing_ref"), _text(args, "date"), _text(args, "time")
                )

            tools.append(_tool(schema, check))

        elif name == "book_visit":
            schema = _schema(
                "book_visit",
                "Book a viewing once the caller chose a free slot and gave a name and a callback "
                "number. If the slot is no longer free, returns alternatives instead.",
                {**_slot_props(refs), **_phone_props()},
            )

            def book(args: dict[str, Any]) -> dict[str, Any]:
                return desk.book_visit(
                    _text(args, "listing_ref"),
                    _text(args, "date"),
                    _text(args, "time"),
                    _text(args, "name"),
                    _text(args, "phone"),
                )

            tools.append(_tool(schema, book))

        elif name == "take_message":
            props: dict[str, Any] = {
                **_phone_props(),
                "subject": {"type": "string", "description": "What the message is about."},
            }
            if departments:
                props["department"] = _nullable(
                    "string", "Team the message is for, if known.", enum=departments
                )
            schema = _schema(
                "take_message",
                "Leave a message for the agency to call the caller back. Read the number back "
                "to the caller before calling this.",
                props,
            )

            def message(args: dict[str, Any]) -> dict[str, Any]:
                return desk.take_message(
                    _text(args, "name"),
                    _text(args, "phone"),
                    args.get("department") or None,
                    _text(args, "subject"),
                )

            tools.append(_tool(schema, message))

        elif name == "transfer_to_human":
            schema = _schema(
                "transfer_to_human",
                "Put the caller through to a team of the agency (simulated in this demo).",
                {"department": {"type": "string", "enum": departments, "description": "Team."}},
            )

            def transfer(args: dict[str, Any]) -> dict[str, Any]:
                return desk.transfer_to_human(_text(args, "department"))

            tools.append(_tool(schema, transfer))

        elif name == "report_incident":
            codes = [t.code for t in data.incident_types]
            schema = _schema(
                "report_incident",
                "Log a problem in a home or building: returns the advice to give now, the "
                "response time and a reference, or says the building is not managed by us.",
                {
                    "incident_code": {
                        "type": "string",
                        "enum": codes,
                        "description": "; ".join(
                            f"{t.code}: {t.label}" for t in data.incident_types
                        ),
                    },
                    "location": {
                        "type": "string",
                        "description": "Address or building name, with floor and flat if given.",
                    },
                    "description": {
                        "type": "string",
                        "description": "The problem, in a few words.",
                    },
                    **_phone_props(),
                },
            )

            def incident(args: dict[str, Any]) -> dict[str, Any]:
                return desk.report_incident(
                    _text(args, "incident_code"),
                    _text(args, "location"),
                    _text(args, "name"),
                    _text(args, "phone"),
                    _text(args, "description"),
                )

            tools.append(_tool(schema, incident))

        elif name == "end_call":
            schema = _schema(
                "end_call",
                "Hang up. Call it once the caller is done and you have said goodbye; never in "
                "the middle of a request.",
                {},
            )

            async def end_call(raw_arguments: dict[str, object], context: RunContext[Any]) -> None:
                await hangup.end_call_from_tool(context)

            tools.append(function_tool(end_call, raw_schema=schema))

    return tools
