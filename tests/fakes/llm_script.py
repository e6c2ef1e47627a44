"""What a scripted model answers, for the in-process `ScriptedLLM` (tests/agent/support.py)
and the OpenAI chat fake (tests/fakes/openai_chat.py) alike.

A `Script` holds `Turn`s keyed by what the caller said: the first turn whose `user_says`
is in the caller's latest message (case-insensitive) answers it, and its `replies[i]`
answers the request made after `i` tool rounds. Keyed by turn and step rather than by
request, a repeated request (preemptive generation, a retry) gets the same answer, so a
script holds however the agent schedules its requests.

The fake's JSON config carries the same objects (`Script.to_json()` / `from_json()`):

    {"turns": [{"user_says": "book",
                "replies": [{"say": "Let me see.",
                             "tools": [{"name": "book_visit", "arguments": {"slot_id": "A"}}]},
                            {"say": "Booked."}]}],
     "fallback": {"say": "Sorry?"}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class ScriptError(ValueError):
    """A script's JSON that does not describe a script."""


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}

    @classmethod
    def from_json(cls, data: object) -> ToolCall:
        spec = _object(data, "a tool call", required=("name",), optional=("arguments",))
        name, arguments = spec["name"], spec.get("arguments", {})
        if not isinstance(name, str) or not isinstance(arguments, dict):
            raise ScriptError(f"a tool call needs a str name and a dict of arguments: {data!r}")
        return cls(name, arguments)


@dataclass(frozen=True)
class Reply:
    """One model response: `say` first, then the tool calls (as models do); or, with
    `fail`, the provider failing instead of answering."""

    say: str = ""
    tools: tuple[ToolCall, ...] = ()
    fail: bool = False

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.say:
            data["say"] = self.say
        if self.tools:
            data["tools"] = [tool.to_json() for tool in self.tools]
        if self.fail:
            data["fail"] = True
        return data

    @classmethod
    def from_json(cls, data: object) -> Reply:
        spec = _object(data, "a reply", optional=("say", "tools", "fail"))
        say, tools, fail = spec.get("say", ""), spec.get("tools", []), spec.get("fail", False)
        if not isinstance(say, str) or not isinstance(tools, list) or not isinstance(fail, bool):
            raise ScriptError(f"a reply's say is a str, tools a list, fail a bool: {data!r}")
        return cls(say, tuple(ToolCall.from_json(tool) for tool in tools), fail)


@dataclass(frozen=True, init=False)
class Turn:
    """The replies to a caller's message containing `user_says` (case-insensitive)."""

    user_says: str
    replies: tuple[Reply, ...]

    def __init__(self, user_says: str, *replies: Reply) -> None:
        object.__setattr__(self, "user_says", user_says)
        object.__setattr__(self, "replies", replies)

    def to_json(self) -> dict[str, Any]:
        return {"user_says": self.user_says, "replies": [r.to_json() for r in self.replies]}

    @classmethod
    def from_json(cls, data: object) -> Turn:
        spec = _object(data, "a turn", required=("user_says", "replies"))
        user_says, replies = spec["user_says"], spec["replies"]
        if not isinstance(user_says, str) or not isinstance(replies, list):
            raise ScriptError(f"a turn's user_says is a str, its replies a list: {data!r}")
        return cls(user_says, *(Reply.from_json(reply) for reply in replies))


@dataclass(frozen=True, init=False)
class Script:
    """The turns, and the reply to a message no turn matches (None: that is an error)."""

    turns: tuple[Turn, ...]
    fallback: Reply | None

    def __init__(self, *turns: Turn, fallback: Reply | None = None) -> None:
        object.__setattr__(self, "turns", turns)
        object.__setattr__(self, "fallback", fallback)

    def reply_for(self, user_text: str, step: int) -> tuple[Turn | None, Reply | None]:
        """The turn answering `user_text` and its reply after `step` tool rounds (None when
        the turn has no reply that far)."""
        said = user_text.casefold()
        for turn in self.turns:
            if turn.user_says.casefold() in said:
                return turn, turn.replies[step] if step < len(turn.replies) else None
        return None, self.fallback

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"turns": [turn.to_json() for turn in self.turns]}
        if self.fallback is not None:
            data["fallback"] = self.fallback.to_json()
        return data

    @classmethod
    def from_json(cls, data: object) -> Script:
        spec = _object(data, "a script", optional=("turns", "fallback"))
        turns, fallback = spec.get("turns", []), spec.get("fallback")
        if not isinstance(turns, list):
            raise ScriptError(f"a script's turns are a list: {data!r}")
        return cls(
            *(Turn.from_json(turn) for turn in turns),
            fallback=None if fallback is None else Reply.from_json(fallback),
        )


def _object(
    data: object, what: str, *, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    """`data` as a JSON object with the required keys and no others than the optional ones
    (a misspelt key would otherwise script a silent, empty reply)."""
    if not isinstance(data, dict):
        raise ScriptError(f"{what} is a JSON object, not {data!r}")
    missing = set(required) - data.keys()
    unknown = data.keys() - set(required) - set(optional)
    if missing or unknown:
        raise ScriptError(
            f"{what}: missing {sorted(missing)}, unknown {sorted(unknown)} in {data!r}"
        )
    return data
