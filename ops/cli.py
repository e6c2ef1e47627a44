"""The ops command line: `python -m ops <command> [--json]`.

Reads the same configuration as the token server (environment or `.env`: REDIS_URL,
VISITOR_HASH_SECRET, POLICIES_DIR, CATALOG_DIR; LIVEKIT_URL and its API key to end calls on
erasure). Every command prints a readable table, or with --json the exact JSON the ops API
answers. Exit codes: 0 done, 1 audit found a breach, 2 bad input or a VISITOR_HASH_SECRET
that is not the token server's (nothing changed), 3 Redis unreachable (nothing changed).
`--ip -` reads the address from standard input (a prompt that does not echo on a
terminal), so it shows neither in `ps` nor in the shell's history. Every lookup, erasure,
block, unblock and showcase change is in the audit log (`audit-log`) as `cli:<os user>`.
`requests ...` serves sales requests and the rights of the people who wrote them
(ops/requests_cli.py); each of those actions is in the audit log too.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from agents_catalog import CatalogError
from ops import commands, requests_cli
from ops.audit_log import cli_actor
from ops.context import OpsContext, build_context
from ops.reconcile import expire_unjoined
from ops.table import render, when
from policies import PolicyError
from redisdb.connection import REDIS_ERRORS
from server.settings import Settings

EXIT_BREACH, EXIT_INPUT, EXIT_REDIS = 1, 2, 3

Result = dict[str, Any]
BAD_INPUT: tuple[type[Exception], ...] = (*commands.INPUT_ERRORS, PolicyError, CatalogError)


# --- text renderers (one per command) ------------------------------------------------------


def _sessions(result: Result) -> str:
    columns = [
        ("issued (UTC)", lambda r: when(r["issued_at"])),
        ("session", lambda r: r["session_id"]),
        ("persona", lambda r: r["persona"]),
        ("status", lambda r: r["status"]),
        ("end reason", lambda r: r["end_reason"]),
        ("duration s", lambda r: r["duration_s"]),
        ("visitor", lambda r: r["visitor"]),
        ("browser", lambda r: r["ua_family"]),
    ]
    table = render(result["sessions"], columns, "No session matches.")
    return f"{table}\n\n{result['count']} session(s) since {result['since']} ago."


def _stats(result: Result) -> str:
    fmt = "%Y-%m-%d %H:00" if result["by"] == "hour" else "%Y-%m-%d"
    from datetime import UTC, datetime

    def start(r: dict[str, object]) -> str:
        return datetime.fromtimestamp(float(r["start"]), UTC).strftime(fmt)  # type: ignore[arg-type]

    cur = result["currency"]
    columns = [
        (result["by"] + " (UTC)", start),
        ("issued", lambda r: r["issued"]),
        ("refused", lambda r: r["refused"]),
        ("never joined", lambda r: r["never_joined"]),
        ("given back", lambda r: r["given_back"]),
        ("minutes", lambda r: r["minutes"]),
        (f"cost {cur}", lambda r: f"{float(r['cost']):.2f}"),
        ("refusals by reason", lambda r: r["refusals"]),
        ("issued by persona", lambda r: r["personas"]),
        ("sessions by status", lambda r: r["sessions"]),
    ]
    rows = [b for b in result["buckets"] if b["issued"] or b["refused"] or b["sessions"]]
    total = {**result["total"], "start": result["buckets"][0]["start"]}
    body = render(rows, columns, "No activity in this window.")
    totals = render([total], [("total", lambda r: "all"), *columns[1:]], "")
    today = result["today"]
    return (
        f"{body}\n\n{totals}\n\nToday: {today['minutes_reserved']} of "
        f"{today['minutes_ceiling']} minutes reserved (daily ceiling)."
    )


def _top(result: Result) -> str:
    columns = [
        ("visitor", lambda r: r["visitor"]),
        ("sessions", lambda r: r["sessions"]),
        ("minutes", lambda r: r["minutes"]),
        ("refusals", lambda r: r["refusals"]),
        ("never joined", lambda r: r["never_joined"]),
        ("UAs", lambda r: r["user_agents"]),
        ("automated?", lambda r: ",".join(r["flags"]) if r["flags"] else "no"),
        ("blocked", lambda r: r["block_reason"] if r["blocked"] else "no"),
    ]
    return render(result["visitors"], columns, f"No visitor in the last {result['window']}.")


def _blocks(result: Result) -> str:
    columns = [
        ("visitor", lambda r: r["visitor"]),
        ("by", lambda r: r["by"]),
        ("reason", lambda r: r["reason"]),
        ("since (UTC)", lambda r: when(r["created_at"])),
        ("expires (UTC)", lambda r: when(r["expires_at"])),
    ]
    return render(result["blocks"], columns, "No visitor is blocked.")


def _block(result: Result) -> str:
    b = result["blocked"]
    return f"Blocked {b['visitor']} until {when(b['expires_at'])} UTC: {b['reason']}"


def _unblock(result: Result) -> str:
    if result["unblocked"]:
        return f"Unblocked {result['visitor']}."
    return f"{result['visitor']} was not blocked."


def _pseudonyms(result: Result) -> str:
    periods = ", ".join(f"period {p['salt_period']}: {p['visitor']}" for p in result["pseudonyms"])
    return f"Address {result['address']} -> {periods or 'no live salt (nothing can be linked)'}"


def _warning(result: Result) -> list[str]:
    return [f"Warning: {result['warning']}."] if "warning" in result else []


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in counts.items()) or "none"


def _lookup(result: Result) -> str:
    found = result["found"]
    shared = result["shared"]
    lines = [_pseudonyms(result), f"Found: {found['sessions']} session(s); keys by kind: "
             f"{_kinds(found['keys_by_kind'])}",
             f"Shared with the networks around the address: {_kinds(shared['keys_by_kind'])}",
             *_warning(result)]  # fmt: skip
    columns = [
        ("issued (UTC)", lambda r: when(float(r.get("issued_at", 0)))),
        ("session", lambda r: r.get("session_id")),
        ("persona", lambda r: r.get("persona")),
        ("status", lambda r: r.get("status")),
        ("end reason", lambda r: r.get("end_reason")),
        ("duration s", lambda r: r.get("duration_s")),
        ("browser", lambda r: r.get("ua_family")),
    ]
    if result["sessions"]:
        lines += ["", render(result["sessions"], columns, "")]
    if result["keys"]:
        key_cols = [
            ("key", lambda r: r["key"]),
            ("kind", lambda r: r["kind"]),
            ("ttl s", lambda r: r["ttl_s"]),
        ]
        lines += ["", render(result["keys"], key_cols, "")]
    return "\n".join(lines)


def _erase(result: Result) -> str:
    deleted, remaining, kept = result["deleted"], result["remaining"], result["kept"]
    shared = result["shared"]
    calls = result["calls"]
    ended = (
        f"Calls ended: {calls['ended']} (LiveKit room deleted); no room: {calls['no_room']}; "
        f"not ended: {calls['not_ended']}" + (f" ({calls['error']})" if calls["error"] else "")
    )
    return "\n".join(
        [
            _pseudonyms(result),
            f"Deleted: {deleted['sessions']} session(s); keys by kind: "
            f"{_kinds(deleted['keys_by_kind'])}",
            f"Refunded: {result['refunded_s']} s of reserved call time (open sessions "
            "released first)",
            ended,
            f"Kept: {_kinds(kept['keys_by_kind'])} ({kept['why']})",
            f"Remaining: {remaining['sessions']} session(s); keys: "
            f"{_kinds(remaining['keys_by_kind'])}",
            f"Shared, kept: {_kinds(shared['keys_by_kind'])} ({shared['why']})",
            *_warning(result),
        ]
    )


def _audit_log(result: Result) -> str:
    columns = [
        ("at (UTC)", lambda r: when(float(r["at"]))),
        ("action", lambda r: r["action"]),
        ("credential", lambda r: r["credential"]),
        ("via", lambda r: r["via"]),
        ("outcome", lambda r: r["outcome"]),
        ("detail", lambda r: _kinds({k: v for k, v in r["detail"].items()})),
    ]
    table = render(result["entries"], columns, f"No ops action in the last {result['since']}.")
    return f"{table}\n\n{result['count']} entr{'y' if result['count'] == 1 else 'ies'}."


def _audit(result: Result) -> str:
    rows = [{"kind": k, **v} for k, v in result["kinds"].items()]
    columns = [
        ("kind", lambda r: r["kind"]),
        ("keys", lambda r: r["keys"]),
        ("max TTL s", lambda r: r["max_ttl_s"]),
        ("policy max s", lambda r: r["policy_max_s"]),
    ]
    lines = [render(rows, columns, "Redis is empty."), ""]
    if result["ok"]:
        lines.append(f"OK: {result['total_keys']} key(s), every one expires within its policy.")
    else:
        lines.append(f"BREACH: {len(result['breaches'])} key(s) break the retention policy:")
        lines += [
            f"  {b['key']}  ({b['kind']}): {b['problem']}"
            + (f", TTL {b['ttl_s']} s > {b['policy_max_s']} s" if "policy_max_s" in b else "")
            for b in result["breaches"]
        ]
    return "\n".join(lines)


def _showcase(result: Result) -> str:
    columns = [
        ("persona", lambda r: r["id"]),
        ("language", lambda r: r["language"]),
        ("enabled", lambda r: r["enabled"]),
        ("featured", lambda r: r["featured"]),
        ("order", lambda r: r["order"]),
        ("overridden", lambda r: r["overridden"]),
        ("name", lambda r: r["display_name"]),
    ]
    rows = result["personas"] if "personas" in result else [result["persona"]]
    return render(rows, columns, "No persona.")


def _showcase_reset(result: Result) -> str:
    return f"Back to the catalogue's values: {', '.join(result['reset']) or 'nothing to reset'}."


def _sweep(result: Result) -> str:
    return f"Closed {len(result['never_joined'])} never-joined session(s)."


# --- the parser --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ops", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="print JSON (the API's shape)")
        return p

    p = command("sessions", "recent sessions, newest first")
    p.add_argument("--since", default="24h", help="window: 90m, 24h, 7d (default 24h)")
    p.add_argument("--persona")
    p.add_argument("--status", choices=commands.STATUSES)
    p.add_argument("--reason", help="end reason (user_hangup, max_duration, abandoned...)")
    p.add_argument("--visitor", help="one visitor pseudonym")
    p.add_argument("--limit", type=int, default=50)

    p = command("stats", "sessions, minutes, refusals, personas and cost per hour or day")
    p.add_argument("--by", choices=("hour", "day"), default="hour")
    p.add_argument("--count", type=int, default=None, help="buckets (default 24 h / 7 days)")

    p = command("top", "visitors ranked, automated-looking ones flagged")
    p.add_argument("--window", default="24h")
    p.add_argument("--by", choices=("sessions", "minutes", "refusals"), default="sessions")
    p.add_argument("--limit", type=int, default=20)

    p = command("block", "block a visitor pseudonym (ends on its own)")
    p.add_argument("visitor")
    p.add_argument("--for", dest="duration", help="7d, 12h... (default: policies/ops.yaml)")
    p.add_argument("--reason", required=True)

    p = command("unblock", "lift a block")
    p.add_argument("visitor")

    command("blocks", "current blocks, with reason and expiry")

    ip_help = "the address, or - to read it from standard input (keeps it out of ps/history)"
    p = command("lookup", "right of access: everything tied to an IP address")
    p.add_argument("--ip", required=True, help=ip_help)

    p = command(
        "erase",
        "right of erasure: delete everything tied to an IP address (open sessions are "
        "released and refunded, calls ended; security blocks are kept)",
    )
    p.add_argument("--ip", required=True, help=ip_help)

    command("audit", "every key has a TTL within policy (exit 1 on breach)")
    p = command("audit-log", "ops actions: what, when, which credential (newest first)")
    p.add_argument("--since", default="7d", help="window: 90m, 24h, 7d (default 7d)")
    p.add_argument("--action", help="one action: lookup, erase, block, unblock...")
    p.add_argument("--limit", type=int, default=100)
    command("sweep", "close sessions whose token was never used to join")
    requests_cli.add_parser(command)

    p = command("showcase", "list or change which personas are shown, featured, in what order")
    show = p.add_subparsers(dest="action", required=True, metavar="action")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        a = show.add_parser(name, help=help_text, description=help_text)
        # SUPPRESS: `showcase --json list` and `showcase list --json` both work.
        a.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
        return a

    action("list", "personas with enabled / featured / order")
    s = action("set", "override enabled / featured / order for one persona")
    s.add_argument("persona")
    s.add_argument("--enable", dest="enabled", action="store_true", default=None)
    s.add_argument("--disable", dest="enabled", action="store_false")
    s.add_argument("--feature", dest="featured", action="store_true", default=None)
    s.add_argument("--unfeature", dest="featured", action="store_false")
    s.add_argument("--order", type=int)
    r = action("reset", "back to the catalogue files' values")
    r.add_argument("persona", nargs="?")
    r.add_argument("--all", action="store_true")
    return parser


Action = Callable[[OpsContext], Awaitable[Result]]


def _address(value: str) -> str:
    """The --ip value; `-` reads it from standard input (not echoed on a terminal)."""
    if value != "-":
        return value
    if sys.stdin.isatty():
        line = getpass.getpass("IP address (not shown): ")
    else:
        line = sys.stdin.readline()
    address = line.strip()
    if not address:
        raise commands.InputError("no address on standard input")
    return address


def _action(args: argparse.Namespace) -> tuple[Action, Callable[[Result], str]]:
    c = args.command
    actor = cli_actor()
    if c == "sessions":
        return (
            lambda ctx: commands.sessions(
                ctx, since=args.since, persona=args.persona, status=args.status,
                reason=args.reason, visitor=args.visitor, limit=args.limit,
            ),
            _sessions,
        )  # fmt: skip
    if c == "stats":
        count = args.count or (24 if args.by == "hour" else 7)
        return lambda ctx: commands.stats(ctx, by=args.by, count=count), _stats
    if c == "top":
        return (
            lambda ctx: commands.top(ctx, window=args.window, by=args.by, limit=args.limit),
            _top,
        )
    if c == "block":
        return (
            lambda ctx: commands.block(
                ctx,
                visitor=args.visitor,
                duration=args.duration,
                reason=args.reason,
                actor=actor,
            ),
            _block,
        )
    if c == "unblock":
        return lambda ctx: commands.unblock(ctx, visitor=args.visitor, actor=actor), _unblock
    if c == "blocks":
        return commands.list_blocks, _blocks
    if c == "lookup":
        ip = _address(args.ip)
        return lambda ctx: commands.lookup(ctx, ip=ip, actor=actor), _lookup
    if c == "erase":
        ip = _address(args.ip)
        return lambda ctx: commands.erase(ctx, ip=ip, actor=actor), _erase
    if c == "audit":
        return commands.audit, _audit
    if c == "audit-log":
        return (
            lambda ctx: commands.audit_entries(
                ctx, since=args.since, action=args.action, limit=args.limit
            ),
            _audit_log,
        )
    if c == "requests":
        return requests_cli.action(args, actor)
    if c == "sweep":

        async def sweep(ctx: OpsContext) -> Result:
            return {"never_joined": await expire_unjoined(ctx)}

        return sweep, _sweep
    # showcase
    if args.action == "list":
        return commands.showcase_list, _showcase
    if args.action == "set":
        return (
            lambda ctx: commands.showcase_set(
                ctx, persona=args.persona, enabled=args.enabled, featured=args.featured,
                order=args.order, actor=actor,
            ),
            _showcase,
        )  # fmt: skip
    if args.all == bool(args.persona):
        raise commands.InputError("showcase reset: name one persona, or --all")
    return (
        lambda ctx: commands.showcase_reset(ctx, persona=args.persona, actor=actor),
        _showcase_reset,
    )


async def _run(action: Action, settings: Settings) -> Result:
    ctx = build_context(settings)
    try:
        return await action(ctx)
    finally:
        await ctx.redis.aclose()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        action, text_of = _action(args)
    except commands.INPUT_ERRORS as exc:
        print(f"ops {args.command}: {exc}", file=sys.stderr)
        return EXIT_INPUT
    try:
        settings = Settings()
    except ValueError as exc:  # a setting that does not validate (pydantic names it)
        print(f"ops: configuration: {exc}", file=sys.stderr)
        return EXIT_INPUT
    try:
        result = asyncio.run(_run(action, settings))
    except BAD_INPUT as exc:
        print(f"ops {args.command}: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except REDIS_ERRORS as exc:
        print(
            f"ops {args.command}: Redis unreachable ({type(exc).__name__}); nothing was changed",
            file=sys.stderr,
        )
        return EXIT_REDIS
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else text_of(result))
    if args.command == "audit" and not result["ok"]:
        return EXIT_BREACH
    return 0
