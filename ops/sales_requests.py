"""Sales requests for sales and for the people who wrote them: each action as one function
returning the JSON the CLI (`python -m ops requests ... --json`) and the API both give.

A request is named by its reference (`ABCD-EFGH-JKMN`) or, for the rights of the person
who wrote it, by their email: found through its keyed hash and a scan of the records (see
sales/store.py). Every action leaves an audit-log entry naming the reference(s) or the
email's keyed hash, never the email; a rectification names the fields changed, not their
values.

What each right does:
- access / portability (`show`, `export`): every field held, the delivery metadata of the
  mail to sales, when the record expires; `export` with an address adds that address's
  demo sessions (ops/privacy.py lookup; OPS_TOKEN or the CLI only).
- rectification (`rectify`): the form's fields, checked as the form checks them; a new
  email moves the request to that email's index.
- restriction (`restrict`, `restrict --lift`): see RESTRICTED_MEANS.
- erasure (`erase`): the records, their index entries (under any secret's hash) and their
  place in the mail queue; the day's counters hold no request and stay.
- contact (`contacted`): the request was answered; its retention starts again from now.
"""

from __future__ import annotations

import time
from typing import Any

from ops import audit_log, blocks, privacy
from ops.audit_log import Actor
from ops.context import OpsContext
from redisdb import keys
from sales.form import FORM_FIELDS, FieldProblem, check_field, say
from sales.identity import parse_reference
from sales.store import StoredRequest

STATUSES = ("new", "contacted", "restricted")
MAX_LIMIT = 1000
PERSONAL = ("name", "email", "phone", "company", "message")
NUMBERS = {
    "created_at", "updated_at", "contacted_at", "rectified_at", "restricted_at",
    "restriction_lifted_at", "notify_last_attempt_at", "notify_next_at", "notify_sent_at",
}  # fmt: skip
COUNTS = {"contacts", "notify_attempts"}
RESTRICTED_MEANS = (
    "kept as it is until it expires or is erased, and nothing else: no mail to sales (a "
    "queued one is withdrawn), no contact recorded, its contents hidden from lists and the "
    "page; show, export, rectify and erase still work, and restrict --lift ends it"
)


class RequestInputError(ValueError):
    """Bad input (reference, email, field); nothing was read or changed."""


class UnknownRequest(RequestInputError):
    """No request has that reference (never made, expired or erased)."""


class RequestRestricted(RequestInputError):
    """The request is restricted: it may not be processed (see RESTRICTED_MEANS)."""


class VisitorsNotAllowed(RequestInputError):
    """The credential may not see visitors' sessions (SALES_TOKEN)."""


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def view(stored: StoredRequest, now: float) -> dict[str, object]:
    """Everything a record holds, times as numbers, with its expiry."""
    out: dict[str, object] = {}
    for name, value in sorted(stored.fields.items()):
        if name in NUMBERS:
            out[name] = _number(value)
        elif name in COUNTS:
            out[name] = int(_number(value) or 0)
        else:
            out[name] = value
    out["restricted"] = stored.restricted
    out["ttl_s"] = stored.ttl_s
    out["expires_at"] = round(now + stored.ttl_s) if stored.ttl_s > 0 else None
    return out


def summary(stored: StoredRequest, now: float) -> dict[str, object]:
    """A row of the list; a restricted request shows no contents."""
    full = view(stored, now)
    row = {
        name: full.get(name)
        for name in (
            "reference", "created_at", "status", "name", "company", "email", "phone",
            "language", "persona", "session_id", "contacted_at", "contacts", "notify_status",
            "restricted", "expires_at", "message",
        )
    }  # fmt: skip
    if stored.restricted:
        row.update(dict.fromkeys(PERSONAL))
        row["status"] = "restricted"
    return row


def _status(stored: StoredRequest) -> str:
    return "restricted" if stored.restricted else stored.fields.get("status", "new")


def _email(ctx: OpsContext, email: str) -> str:
    try:
        return str(check_field("email", email, ctx.request_rules))
    except FieldProblem as exc:
        problem = exc.problem
        raise RequestInputError(f"email: {say('en', problem.key, **problem.params)}") from exc


async def _select(
    ctx: OpsContext, reference: str | None, email: str | None
) -> tuple[list[StoredRequest], dict[str, object]]:
    """The request named by its reference, or every request of an email; and how the
    audit log names them."""
    if (reference is None) == (email is None):
        raise RequestInputError("name one request (its reference) or an email, not both")
    if reference is not None:
        parsed = parse_reference(reference)
        if parsed is None:
            raise RequestInputError(f"{reference!r} is not a request reference (ABCD-EFGH-JKMN)")
        stored = await ctx.requests.get(parsed)
        if stored is None:
            raise UnknownRequest(f"no request {parsed} (never made, expired or erased)")
        return [stored], {"reference": parsed}
    address = _email(ctx, str(email))
    # The index is keyed with VISITOR_HASH_SECRET: a CLI with another secret would write
    # under hashes nobody finds (the scan would still find the records; the check keeps
    # the index right).
    await privacy.check_secret(ctx)
    found = await ctx.requests.find(address)
    return found, {
        "email_hash": ctx.requests.email_hash(address),
        "references": [s.reference for s in found],
    }


async def list_requests(
    ctx: OpsContext, *, since: str = "30d", status: str | None = None, limit: int = 50,
    actor: Actor,
) -> dict[str, object]:  # fmt: skip
    if status is not None and status not in STATUSES:
        raise RequestInputError(f"status must be one of {', '.join(STATUSES)}")
    if not 1 <= limit <= MAX_LIMIT:
        raise RequestInputError(f"limit must be between 1 and {MAX_LIMIT}")
    try:
        window_s = blocks.parse_duration(since)
    except blocks.BlockError as exc:
        raise RequestInputError(f"since: {exc}") from exc
    now = time.time()
    rows = [
        stored
        async for stored in ctx.requests.scan()
        if stored.created_at >= now - window_s and (status is None or _status(stored) == status)
    ]
    rows.sort(key=lambda s: s.created_at, reverse=True)
    shown = rows[:limit]
    await audit_log.record(ctx, actor, "requests_list", count=len(shown))
    return {
        "since": since,
        "count": len(shown),
        "requests": [summary(s, now) for s in shown],
    }


async def show(
    ctx: OpsContext, *, reference: str | None = None, email: str | None = None, actor: Actor
) -> dict[str, object]:
    found, named = await _select(ctx, reference, email)
    await audit_log.record_detail(ctx, actor, "request_show", {"count": len(found), **named})
    now = time.time()
    return {"count": len(found), "requests": [view(s, now) for s in found]}


async def contacted(
    ctx: OpsContext, *, reference: str | None = None, email: str | None = None, actor: Actor
) -> dict[str, object]:
    found, named = await _select(ctx, reference, email)
    done, restricted = [], []
    for stored in found:
        outcome = await ctx.requests.contacted(stored.reference)
        if outcome == 1:
            done.append(stored.reference)
        elif outcome == 2:
            restricted.append(stored.reference)
    if reference is not None and restricted:
        await audit_log.record_detail(ctx, actor, "request_contacted", named, "refused")
        raise RequestRestricted(f"{restricted[0]} is restricted: {RESTRICTED_MEANS}")
    await audit_log.record_detail(
        ctx, actor, "request_contacted", {"contacted": done, "restricted": restricted, **named}
    )
    return {
        "contacted": done,
        "restricted": restricted,
        "kept_until": round(time.time() + ctx.requests.ttl_s) if done else None,
    }


def _changes(ctx: OpsContext, changes: dict[str, Any]) -> dict[str, str | None]:
    if not changes:
        raise RequestInputError(f"nothing to rectify: give one of {', '.join(FORM_FIELDS)}")
    unknown = set(changes) - set(FORM_FIELDS)
    if unknown:
        raise RequestInputError(
            f"only the form's fields can be rectified ({', '.join(FORM_FIELDS)}); "
            f"not {', '.join(sorted(unknown))}"
        )
    cleaned: dict[str, str | None] = {}
    for name, value in changes.items():
        try:
            cleaned[name] = check_field(name, value, ctx.request_rules)
        except FieldProblem as exc:
            problem = exc.problem
            raise RequestInputError(f"{name}: {say('en', problem.key, **problem.params)}") from exc
    return cleaned


async def rectify(
    ctx: OpsContext,
    *,
    reference: str | None = None,
    email: str | None = None,
    changes: dict[str, Any],
    actor: Actor,
) -> dict[str, object]:
    cleaned = _changes(ctx, changes)
    found, named = await _select(ctx, reference, email)
    done = [s.reference for s in found if await ctx.requests.rectify(s.reference, cleaned)]
    await audit_log.record_detail(
        ctx, actor, "request_rectify", {"fields": sorted(cleaned), "rectified": done, **named}
    )
    return {"rectified": done, "fields": sorted(cleaned)}


async def restrict(
    ctx: OpsContext,
    *,
    reference: str | None = None,
    email: str | None = None,
    lift: bool = False,
    actor: Actor,
) -> dict[str, object]:
    found, named = await _select(ctx, reference, email)
    done = [s.reference for s in found if await ctx.requests.restrict(s.reference, lift=lift)]
    await audit_log.record_detail(
        ctx, actor, "request_restrict", {"lift": lift, "changed": done, **named}
    )
    if lift:
        return {"lifted": done}
    return {"restricted": done, "meaning": RESTRICTED_MEANS}


async def remaining(ctx: OpsContext, references: list[str]) -> dict[str, int]:
    """What Redis still holds of these requests, key by key (after an erasure: zeros)."""
    redis = ctx.redis
    records = sum([int(await redis.exists(keys.request(r))) for r in references])
    queued = 0
    if references:
        scores = await redis.zmscore(keys.requests_pending(), references)
        queued = sum(score is not None for score in scores)
    index_entries = 0
    async for index in redis.scan_iter(match=keys.pattern(keys.REQUESTS_BY_EMAIL), count=500):
        for reference in references:
            index_entries += int(await redis.sismember(index, reference))
    return {"records": records, "index_entries": index_entries, "queued": queued}


async def erase(
    ctx: OpsContext, *, reference: str | None = None, email: str | None = None, actor: Actor
) -> dict[str, object]:
    found, named = await _select(ctx, reference, email)
    references = [s.reference for s in found]
    erased = await ctx.requests.erase(references)
    left = await remaining(ctx, references)
    await audit_log.record_detail(ctx, actor, "request_erase", {"erased": erased, **named})
    return {
        "erased": references,
        "remaining": left,
        "kept": "the day's request counters (counts per visitor pseudonym, no request in "
        "them) until the day ends; the audit log's entries (reference or email hash) for "
        "their retention; copies of the mail to sales in mailboxes: delete them there",
    }


async def export(
    ctx: OpsContext, *, email: str, ip: str | None = None, actor: Actor, sees_visitors: bool = True
) -> dict[str, object]:
    """Portability: everything held about an email and, with an address, its demo sessions."""
    if ip is not None and not sees_visitors:
        raise VisitorsNotAllowed("the sales credential cannot see demo sessions: use OPS_TOKEN")
    found, named = await _select(ctx, None, email)
    sessions = await privacy.lookup(ctx, ip) if ip is not None else None
    detail: dict[str, object] = {"count": len(found), **named}
    if sessions is not None:
        detail["sessions"] = len(sessions["sessions"])  # type: ignore[arg-type]
    await audit_log.record_detail(ctx, actor, "request_export", detail)
    now = time.time()
    return {
        "exported_at": round(now, 3),
        "email_hash": named["email_hash"],
        "requests": [view(s, now) for s in found],
        "demo_sessions": sessions,
    }
