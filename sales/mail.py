"""The mail to sales: the SMTP settings, the message, one delivery attempt.

One scheme: `SMTP_URL` names the relay and how to reach it, `SALES_EMAIL` who gets the
mail (comma-separated), `SMTP_FROM` who sends it. All three or none (no notification).

- `smtps://user:password@host:465`: TLS from the first byte;
- `smtp+starttls://user:password@host:587`: STARTTLS, required (a relay that does not
  offer it gets nothing: never downgraded to clear text);
- `smtp://host:25`: no TLS at all: a relay on this host or in our private network only
  (refused in production unless the host is a loopback address).

User and password are optional, URL-encoded (`%40` for an @). Certificates are checked
against the system's CAs. Delivery runs in a worker thread (smtplib blocks); it raises
DeliveryFailed with a short code (`smtp_451`, `connection_refused`, `tls`...), never the
server's words (they may quote an address).
"""

from __future__ import annotations

import ipaddress
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from typing import Literal
from urllib.parse import unquote, urlsplit

from server.settings import ConfigError, Settings

Security = Literal["tls", "starttls", "none"]
SCHEMES: dict[str, tuple[Security, int]] = {
    "smtps": ("tls", 465),
    "smtp+starttls": ("starttls", 587),
    "smtp": ("none", 25),
}


class DeliveryFailed(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class SmtpConfig:
    security: Security
    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    timeout_s: float
    username: str = ""
    password: str = field(default="", repr=False)

    @property
    def domain(self) -> str:
        return self.sender.rpartition("@")[2] or "localhost"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _address(variable: str, value: str) -> str:
    try:
        Address(addr_spec=value)
    except (ValueError, IndexError) as exc:  # the email package's parse errors
        raise ConfigError(f"{variable}: {value!r} is not an email address") from exc
    if "@" not in value or any(c.isspace() for c in value):
        raise ConfigError(f"{variable}: {value!r} is not an email address")
    return value


def smtp_config(settings: Settings, timeout_s: float) -> SmtpConfig | None:
    """The relay to mail sales through, None when notification is off; ConfigError (at
    start-up) when the settings are half there or wrong."""
    given = {
        "SMTP_URL": settings.smtp_url.strip(),
        "SALES_EMAIL": ",".join(settings.sales_email),
        "SMTP_FROM": settings.smtp_from.strip(),
    }
    if not any(given.values()):
        return None
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise ConfigError(
            f"mail to sales needs SMTP_URL, SALES_EMAIL and SMTP_FROM together: "
            f"{', '.join(missing)} missing (leave all three empty for no notification)"
        )
    url = urlsplit(given["SMTP_URL"])
    if url.scheme not in SCHEMES:
        raise ConfigError(
            "SMTP_URL must start with smtps://, smtp+starttls:// or smtp:// "
            f"(got {url.scheme or 'no scheme'}://)"
        )
    if url.path not in ("", "/") or url.query or url.fragment:
        raise ConfigError("SMTP_URL: only scheme://[user:password@]host[:port]")
    security, default_port = SCHEMES[url.scheme]
    try:
        host, port = url.hostname, url.port or default_port
    except ValueError as exc:
        raise ConfigError(f"SMTP_URL: {exc}") from exc
    if not host:
        raise ConfigError("SMTP_URL names no host")
    if security == "none" and settings.production and not _loopback(host):
        raise ConfigError(
            "SMTP_URL: smtp:// sends requests and the relay password in clear; in "
            "production use smtps:// or smtp+starttls:// (or a relay on loopback)"
        )
    return SmtpConfig(
        security=security,
        host=host,
        port=port,
        sender=_address("SMTP_FROM", given["SMTP_FROM"]),
        recipients=tuple(_address("SALES_EMAIL", a) for a in settings.sales_email),
        timeout_s=timeout_s,
        username=unquote(url.username or ""),
        password=unquote(url.password or ""),
    )


LABELS = (
    ("Reference", "reference"),
    ("Name", "name"),
    ("Email", "email"),
    ("Phone", "phone"),
    ("Company", "company"),
    ("Answer in", "language"),
    ("Demo agent", "persona"),
    ("Demo call", "session_id"),
    ("Page language", "page_language"),
)


def message_id(reference: str, config: SmtpConfig) -> str:
    """The same for every attempt: a mail delivered twice (a crash between the relay's
    answer and our record of it) is one message to the mail clients that group by it."""
    return f"<{reference}.sales-request@{config.domain}>"


def compose(record: dict[str, str], config: SmtpConfig, created: str) -> EmailMessage:
    reference = record["reference"]
    mail = EmailMessage()
    mail["From"] = config.sender
    mail["To"] = ", ".join(config.recipients)
    # Replying answers the prospect; validated on the way in (no line breaks anywhere).
    mail["Reply-To"] = record["email"]
    mail["Subject"] = f"Demo request {reference}: {record.get('company', '')}"
    mail["Message-ID"] = message_id(reference, config)
    mail["Date"] = formatdate(usegmt=True)
    lines = [f"{label}: {record[name]}" for label, name in LABELS if record.get(name)]
    lines += [
        f"Received: {created}",
        "",
        "Message:",
        record.get("message", ""),
        "",
        "--",
        f"python -m ops requests show {reference}   (record a contact: ... contacted)",
        "This mail is a copy: erasing or restricting the request does not reach it.",
    ]
    mail.set_content("\n".join(lines))
    return mail


def _failure(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = sorted({code for code, _ in exc.recipients.values()})
        return "smtp_rcpt_" + "_".join(str(c) for c in codes)
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"smtp_{exc.smtp_code}"
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return "not_supported"  # e.g. credentials given, the relay offers no AUTH
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return "disconnected"
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return "tls"
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, socket.gaierror):
        return "dns"
    return "network"


def deliver(config: SmtpConfig, mail: EmailMessage) -> str:
    """Hand the mail to the relay (blocking: run it in a thread). Returns '' or, when the
    relay took it for some recipients only, `partial`; raises DeliveryFailed."""
    context = ssl.create_default_context()
    # Our own host name, without asking DNS (getfqdn may wait on a resolver).
    local = socket.gethostname() or "localhost"
    try:
        smtp: smtplib.SMTP
        if config.security == "tls":
            smtp = smtplib.SMTP_SSL(
                config.host, config.port, local_hostname=local, timeout=config.timeout_s,
                context=context,
            )  # fmt: skip
        else:
            smtp = smtplib.SMTP(
                config.host, config.port, local_hostname=local, timeout=config.timeout_s
            )
        with smtp:
            smtp.ehlo()
            if config.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise DeliveryFailed("tls_unavailable")
                smtp.starttls(context=context)
                smtp.ehlo()
            if config.username:
                smtp.login(config.username, config.password)
            refused = smtp.send_message(mail)
    except DeliveryFailed:
        raise
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryFailed(_failure(exc)) from None
    return "partial" if refused else ""
