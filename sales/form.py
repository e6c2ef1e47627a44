"""The form of `POST /api/requests`: exactly the privacy policy's fields (name, email,
phone, company, message, language) and the context the page adds (persona, session id,
page language), each checked, every problem named by a message key.

The keys are the contract with the page, which words them in its own language; the server
also says them in French or English (messages.yaml) for any other client. A field the
policy does not name is refused, never stored. `website` is a honeypot: people never see
it, scripts fill it (the endpoint then pretends success and stores nothing).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from sales.policy import RequestRules

FORM_FIELDS = ("name", "email", "phone", "company", "message", "language")
CONTEXT_FIELDS = ("persona", "session_id", "page_language")
HONEYPOT = "website"
TEXT_FIELDS = ("name", "email", "phone", "company", "message")
DEFAULT_LANGUAGE = "en"

# livekit_token.new_session_id: 12 random bytes, URL-safe base64.
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{16}")
PERSONA_ID_MAX = 64
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_TLD = r"(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})"
EMAIL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+{_TLD}")
PHONE = re.compile(r"\+?[0-9 ().-]+")
PHONE_DIGITS = (6, 15)  # E.164 numbers have at most 15 digits
# Line and paragraph separators break a line like a newline does.
_LINE_BREAKS = {"\u2028", "\u2029", "\x85"}

_HERE = Path(__file__).resolve().parent


@cache
def _messages() -> dict[str, dict[str, str]]:
    data: dict[str, dict[str, str]] = yaml.safe_load(
        (_HERE / "messages.yaml").read_text(encoding="utf-8")
    )
    return data


def say(language: str, key: str, **params: object) -> str:
    """The server's words for a message key, in French or English."""
    messages = _messages()
    text = messages.get(language, messages[DEFAULT_LANGUAGE]).get(key, key)
    shown = {k: ", ".join(map(str, v)) if isinstance(v, list) else v for k, v in params.items()}
    return text.format(**shown)


@dataclass(frozen=True)
class Problem:
    key: str
    params: dict[str, object] = field(default_factory=dict)

    def as_dict(self, language: str) -> dict[str, object]:
        return {"key": self.key, **self.params, "message": say(language, self.key, **self.params)}


class FieldProblem(ValueError):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.key)
        self.problem = problem


class FormInvalid(ValueError):
    """One problem per field name; nothing was stored."""

    def __init__(self, problems: dict[str, Problem]) -> None:
        super().__init__(", ".join(f"{name}: {p.key}" for name, p in problems.items()))
        self.problems = problems


class NotAnObject(FormInvalid):
    """The body is not a JSON object: there is no field to name (a marker among the field
    names would be one a client could send)."""

    def __init__(self) -> None:
        super().__init__({})


@dataclass(frozen=True)
class SalesForm:
    name: str
    email: str
    phone: str | None
    company: str
    message: str
    language: str
    persona: str | None = None
    session_id: str | None = None
    page_language: str | None = None

    def stored_fields(self) -> dict[str, str]:
        """The record's form and context fields; an absent optional one is not written."""
        values = {name: getattr(self, name) for name in (*FORM_FIELDS, *CONTEXT_FIELDS)}
        return {name: value for name, value in values.items() if value is not None}


def language_of(body: object, rules: RequestRules) -> str:
    """The language to answer in: the page's, else the one asked for, else English."""
    if isinstance(body, Mapping):
        for name in ("page_language", "language"):
            value = body.get(name)
            if isinstance(value, str) and value.strip().lower() in rules.languages:
                return value.strip().lower()
    return DEFAULT_LANGUAGE


def is_honeypot(body: object) -> bool:
    if not isinstance(body, Mapping):
        return False
    value = body.get(HONEYPOT)
    return bool(value.strip()) if isinstance(value, str) else value not in (None, False)


def _breaks_line(char: str) -> bool:
    return char in _LINE_BREAKS or unicodedata.category(char) == "Cc"


def _valid_email(value: str) -> bool:
    local, _, domain = value.rpartition("@")
    if not local or len(local) > 64:
        return False
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    return len(ascii_domain) <= 253 and EMAIL.fullmatch(f"{local}@{ascii_domain}") is not None


def _valid_phone(value: str) -> bool:
    digits = sum(c.isdigit() for c in value)
    return (
        PHONE.fullmatch(value) is not None
        and PHONE_DIGITS[0] <= digits <= PHONE_DIGITS[1]
        and all(c.isascii() for c in value)
    )


def check_text(name: str, value: object, rules: RequestRules) -> str | None:
    """One of the form's text fields, trimmed; None for an empty optional phone. Raises
    FieldProblem."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise FieldProblem(Problem("not_text"))
    if name == "message":
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    value = value.strip()
    if not value:
        if name == "phone":
            return None
        raise FieldProblem(Problem("required"))
    allowed = "\n\t" if name == "message" else ""
    if any(_breaks_line(c) and c not in allowed for c in value):
        raise FieldProblem(Problem("invalid_characters"))
    length = getattr(rules.fields, name)
    if len(value) > length.max:
        raise FieldProblem(Problem("too_long", {"max": length.max}))
    if name == "email" and not _valid_email(value):
        raise FieldProblem(Problem("invalid_email"))
    if name == "phone" and not _valid_phone(value):
        raise FieldProblem(Problem("invalid_phone"))
    if len(value) < length.min:
        raise FieldProblem(Problem("too_short", {"min": length.min}))
    return value


def check_language(value: object, rules: RequestRules, *, required: bool) -> str | None:
    if value is None or value == "":
        if required:
            raise FieldProblem(Problem("required"))
        return None
    if not isinstance(value, str):
        raise FieldProblem(Problem("not_text"))
    if value.strip().lower() not in rules.languages:
        raise FieldProblem(Problem("not_allowed", {"allowed": list(rules.languages)}))
    return value.strip().lower()


def check_field(name: str, value: object, rules: RequestRules) -> str | None:
    """A form field as the form and rectification both check it."""
    if name == "language":
        return check_language(value, rules, required=True)
    if name in TEXT_FIELDS:
        return check_text(name, value, rules)
    raise FieldProblem(Problem("unknown_field"))


def _context(
    body: Mapping[str, Any], rules: RequestRules, persona_known: Callable[[str], bool]
) -> dict[str, str | None]:
    """The context fields, each checked; raises FormInvalid with every problem found."""
    problems: dict[str, Problem] = {}
    context: dict[str, str | None] = {}
    persona = body.get("persona")
    if persona in (None, ""):
        context["persona"] = None
    elif not isinstance(persona, str):
        problems["persona"] = Problem("not_text")
    elif len(persona) > PERSONA_ID_MAX or not persona_known(persona):
        problems["persona"] = Problem("unknown_persona")
    else:
        context["persona"] = persona
    session_id = body.get("session_id")
    if session_id in (None, ""):
        context["session_id"] = None
    elif not isinstance(session_id, str) or not SESSION_ID.fullmatch(session_id):
        problems["session_id"] = Problem("invalid_session")
    else:
        context["session_id"] = session_id
    try:
        context["page_language"] = check_language(body.get("page_language"), rules, required=False)
    except FieldProblem as exc:
        problems["page_language"] = exc.problem
    if problems:
        raise FormInvalid(problems)
    return context


def parse_form(
    body: object, rules: RequestRules, persona_known: Callable[[str], bool]
) -> SalesForm:
    """The form, or FormInvalid naming every field's problem (NotAnObject for a body that
    is not an object)."""
    if not isinstance(body, Mapping):
        raise NotAnObject
    problems: dict[str, Problem] = {}
    values: dict[str, str | None] = {}
    for name in FORM_FIELDS:
        try:
            values[name] = check_field(name, body.get(name), rules)
        except FieldProblem as exc:
            problems[name] = exc.problem
    try:
        values.update(_context(body, rules, persona_known))
    except FormInvalid as exc:
        problems.update(exc.problems)
    accepted = {*FORM_FIELDS, *CONTEXT_FIELDS, HONEYPOT}
    for name in body:
        if name not in accepted:
            problems[str(name)[:64]] = Problem("unknown_field")
    if problems:
        raise FormInvalid(problems)
    return SalesForm(
        name=str(values["name"]),
        email=str(values["email"]),
        phone=values["phone"],
        company=str(values["company"]),
        message=str(values["message"]),
        language=str(values["language"]),
        persona=values.get("persona"),
        session_id=values.get("session_id"),
        page_language=values.get("page_language"),
    )
