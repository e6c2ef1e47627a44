"""How a request is named: a random reference for people, a keyed hash of the email for
finding every request of one person. Never the email itself as a key.

email hash = HMAC-SHA256(VISITOR_HASH_SECRET, "sales-request-email|v1|" + email in lower
case), 128 bits. The same pepper as the visitor pseudonyms (already required, checked in
production and fingerprinted in Redis for the ops tools), under its own prefix so the two
kinds of hash can never collide. No salt: a request must stay findable by its email for
as long as it is kept.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

# Crockford's base32: no I, L, O, U, so a reference read out on the phone is unambiguous.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
GROUPS, GROUP_LEN = 3, 4  # 60 random bits: ABCD-EFGH-JKMN
_GROUP = f"[{ALPHABET}]{{{GROUP_LEN}}}"
REFERENCE = re.compile(f"{_GROUP}(?:-{_GROUP}){{{GROUPS - 1}}}")
HASH_HEX = 32
_EMAIL_KIND = b"sales-request-email|v1|"


def new_reference() -> str:
    chars = "".join(secrets.choice(ALPHABET) for _ in range(GROUPS * GROUP_LEN))
    return "-".join(chars[i : i + GROUP_LEN] for i in range(0, len(chars), GROUP_LEN))


def parse_reference(text: str) -> str | None:
    """A reference as typed by a person (any case, spaces around), or None."""
    candidate = text.strip().upper()
    return candidate if REFERENCE.fullmatch(candidate) else None


def normalise_email(email: str) -> str:
    return email.strip().lower()


def email_hash(pepper: str, email: str) -> str:
    message = _EMAIL_KIND + normalise_email(email).encode()
    return hmac.new(pepper.encode(), message, hashlib.sha256).hexdigest()[:HASH_HEX]
