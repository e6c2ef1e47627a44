"""Redis replies as text: a client made with `decode_responses=False` (the token server's)
answers bytes, one made with it answers str, and script replies mix in integers; every
reader of a key or a script result goes through `text` rather than guessing which."""

from __future__ import annotations


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
