"""`python -m ops requests list|show|contacted|rectify|restrict|erase|export`: sales
requests from the command line (ops/sales_requests.py does the work).

A request is named by its reference, or all of a person's by `--email`. Email, new email
and address may be given as `-` to read them from standard input, one line each in that
order (a prompt that does not echo on a terminal): they then show neither in `ps` nor in
the shell's history. `export` always prints JSON (it is the portable copy).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from ops import sales_requests
from ops.audit_log import Actor
from ops.context import OpsContext
from ops.table import render, when

Result = dict[str, Any]
Action = Callable[[OpsContext], Awaitable[Result]]
Command = Callable[[str, str], argparse.ArgumentParser]
FIELD_OPTIONS = ("name", "phone", "company", "message", "language")


def add_parser(command: Command) -> None:
    p = command("requests", "sales requests: list, read, record a contact, serve the rights")
    actions = p.add_subparsers(dest="action", required=True, metavar="action")

    def action(name: str, help_text: str, *, target: bool = True) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help_text, description=help_text)
        # SUPPRESS: `requests --json list` and `requests list --json` both work.
        a.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
        if target:
            a.add_argument("reference", nargs="?", help="the request's reference")
            a.add_argument("--email", help="every request of this email (- : standard input)")
        return a

    a = action("list", "requests received, newest first", target=False)
    a.add_argument("--since", default="30d", help="window: 24h, 30d, 365d (default 30d)")
    a.add_argument("--status", choices=sales_requests.STATUSES)
    a.add_argument("--limit", type=int, default=50)
    action("show", "everything held about a request (right of access)")
    action("contacted", "record a contact: its retention starts again from now")
    a = action("rectify", "correct the form's fields (right of rectification)")
    for name in FIELD_OPTIONS:
        a.add_argument(f"--{name}", help=f"the new {name}")
    a.epilog = "--phone '' removes the phone number."
    a.add_argument("--new-email", help="the new email (- : standard input)")
    a = action("restrict", "restrict processing (no mail, no contact; --lift ends it)")
    a.add_argument("--lift", action="store_true")
    action("erase", "delete the request(s) (right of erasure)")
    a = action("export", "portability: everything held about an email, as JSON", target=False)
    a.add_argument("--email", required=True, help="the email (- : standard input)")
    a.add_argument("--ip", help="also that address's demo sessions (- : standard input)")


def _stdin(value: str | None, prompt: str) -> str | None:
    if value != "-":
        return value
    if sys.stdin.isatty():
        line = getpass.getpass(f"{prompt} (not shown): ")
    else:
        line = sys.stdin.readline()
    text = line.strip()
    if not text:
        raise sales_requests.RequestInputError(f"no {prompt.lower()} on standard input")
    return text


# --- text ----------------------------------------------------------------------------------


def _list(result: Result) -> str:
    columns = [
        ("received (UTC)", lambda r: when(r["created_at"])),
        ("reference", lambda r: r["reference"]),
        ("status", lambda r: r["status"]),
        ("name", lambda r: r["name"]),
        ("company", lambda r: r["company"]),
        ("email", lambda r: r["email"]),
        ("phone", lambda r: r["phone"]),
        ("lang", lambda r: r["language"]),
        ("persona", lambda r: r["persona"]),
        ("mail", lambda r: r["notify_status"]),
        ("contacted (UTC)", lambda r: when(r["contacted_at"])),
    ]
    table = render(result["requests"], columns, "No request in this window.")
    return f"{table}\n\n{result['count']} request(s) since {result['since']} ago."


def _show(result: Result) -> str:
    if not result["requests"]:
        return "No request holds that email."
    blocks = []
    for request in result["requests"]:
        lines = []
        for name, value in request.items():
            shown = when(value) if name.endswith("_at") else value
            if name == "message":
                shown = "\n    " + str(value).replace("\n", "\n    ")
            lines.append(f"{name}: {shown}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _contacted(result: Result) -> str:
    lines = []
    if result["contacted"]:
        lines.append(
            f"Contact recorded: {', '.join(result['contacted'])} (kept until "
            f"{when(result['kept_until'])} UTC unless contacted again)."
        )
    if result["restricted"]:
        lines.append(f"Restricted, nothing recorded: {', '.join(result['restricted'])}.")
    return "\n".join(lines) or "No request holds that email."


def _rectify(result: Result) -> str:
    if not result["rectified"]:
        return "No request holds that email."
    return f"Rectified {', '.join(result['rectified'])}: {', '.join(result['fields'])}."


def _restrict(result: Result) -> str:
    if "lifted" in result:
        return f"Restriction lifted: {', '.join(result['lifted']) or 'nothing'}."
    if not result["restricted"]:
        return "No request holds that email."
    return f"Restricted {', '.join(result['restricted'])}: {result['meaning']}."


def _erase(result: Result) -> str:
    left = result["remaining"]
    return (
        f"Erased {len(result['erased'])} request(s): {', '.join(result['erased']) or '-'}\n"
        f"Remaining: records={left['records']}, index entries={left['index_entries']}, "
        f"queued mails={left['queued']}\nKept: {result['kept']}"
    )


def action(args: argparse.Namespace, actor: Actor) -> tuple[Action, Callable[[Result], str]]:
    if args.action == "list":
        return (
            lambda ctx: sales_requests.list_requests(
                ctx, since=args.since, status=args.status, limit=args.limit, actor=actor
            ),
            _list,
        )
    email = _stdin(args.email, "Email")
    if args.action == "export":
        ip = _stdin(args.ip, "IP address")
        return (
            lambda ctx: sales_requests.export(ctx, email=str(email), ip=ip, actor=actor),
            lambda result: json.dumps(result, indent=2, ensure_ascii=False),
        )
    target: dict[str, Any] = {"reference": args.reference, "email": email, "actor": actor}
    if args.action == "show":
        return lambda ctx: sales_requests.show(ctx, **target), _show
    if args.action == "contacted":
        return lambda ctx: sales_requests.contacted(ctx, **target), _contacted
    if args.action == "rectify":
        changes = {n: getattr(args, n) for n in FIELD_OPTIONS if getattr(args, n) is not None}
        new_email = _stdin(args.new_email, "New email")
        if new_email is not None:
            changes["email"] = new_email
        return lambda ctx: sales_requests.rectify(ctx, changes=changes, **target), _rectify
    if args.action == "restrict":
        return lambda ctx: sales_requests.restrict(ctx, lift=args.lift, **target), _restrict
    return lambda ctx: sales_requests.erase(ctx, **target), _erase
