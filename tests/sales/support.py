"""Helpers for the sales-request tests: a form full of distinctive values, policies with
other request rules, and a real SMTP server on loopback (aiosmtpd) that can refuse."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.support import ROOT, free_port, write_policies

# Every value is one no other test data holds, so a scan of Redis or a log finds it.
FORM: dict[str, str] = {
    "name": "Zéphyrine Quaglia-Brun",
    "email": "Zephyrine.Quaglia@agence-exemple.fr",
    "phone": "+33 6 71 82 93 04",
    "company": "Agence Quaglia Immobilier",
    "message": "Bonjour,\nnous voulons la démo pour nos 3 agences (Quaglia).",
    "language": "fr",
    "page_language": "fr",
}
OTHER: dict[str, str] = {
    "name": "Bartholomew Yarrowfield",
    "email": "b.yarrowfield@lettings-example.co.uk",
    "phone": "07700 900461",
    "company": "Yarrowfield Lettings",
    "message": "Hello, we would like this for our lettings desk.",
    "language": "en",
    "page_language": "en",
}
SALES_TOKEN = "sales-token-for-tests-5647382910-qwertyuiopas"
SALES_EMAIL = "sales@onecallflow.test"
SMTP_FROM = "demo-bot@onecallflow.test"


def personal_values(form: dict[str, str]) -> list[bytes]:
    """What must never be stored outside the request records, whole or in lower case."""
    values = [form["name"], form["email"], form["email"].lower(), form["phone"]]
    values.append(form["phone"].replace(" ", ""))
    return [v.encode() for v in values]


def write_request_policies(directory: Path, **sections: dict[str, Any]) -> Path:
    """The shipped policies with parts of requests.yaml replaced (e.g.
    `limits={"per_visitor_per_day": 2}`)."""
    write_policies(directory)
    rules = yaml.safe_load((ROOT / "policies" / "requests.yaml").read_text())
    for name, values in sections.items():
        rules[name].update(values)
    (directory / "requests.yaml").write_text(yaml.safe_dump(rules))
    return directory


# Quick retries for tests: the waits are seconds, the rules' checks still hold.
FAST_NOTIFY = {"first_retry_s": 0.3, "max_retry_s": 1.0, "timeout_s": 3, "lease_s": 30,
               "poll_s": 0.5}  # fmt: skip


@dataclass
class SinkHandler:
    """Accepts mail, unless told to refuse the next attempts (one queued answer each)."""

    refuse_rcpt: list[str] = field(default_factory=list)
    refuse_data: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)
    # Seconds the relay takes to answer DATA (a slow relay).
    data_delay_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        with self.lock:
            if self.refuse_rcpt:
                return self.refuse_rcpt.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_delay_s:
            await asyncio.sleep(self.data_delay_s)
        with self.lock:
            if self.refuse_data:
                return self.refuse_data.pop(0)
            content = envelope.original_content or b""
            self.messages.append(message_from_bytes(content))
            self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        return "250 Message accepted"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            self.logins.append((data.login, data.password))
            return AuthResult(success=data.password == b"p@ss word")
        return AuthResult(success=False)


@dataclass
class SmtpSink:
    """aiosmtpd on 127.0.0.1:port (port chosen now, server started when asked: until
    then the port is closed)."""

    handler: SinkHandler = field(default_factory=SinkHandler)
    port: int = field(default_factory=free_port)
    controller: Controller | None = None

    def start(self, *, auth: bool = False) -> SmtpSink:
        extra: dict[str, Any] = {}
        if auth:
            extra = {"authenticator": self.handler.authenticate, "auth_require_tls": False}
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, server_hostname="sink.test",
            ready_timeout=30, **extra,
        )  # fmt: skip
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def env(self, scheme: str = "smtp") -> dict[str, str]:
        return {
            "SMTP_URL": f"{scheme}://127.0.0.1:{self.port}",
            "SALES_EMAIL": SALES_EMAIL,
            "SMTP_FROM": SMTP_FROM,
        }
