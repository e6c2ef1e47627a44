"""`/ops`: the ops page, rendered on the server (inline SVG charts, no script at all).

How the token reaches the page without a cookie or the URL: the page is a login form; the
ops person types (or lets a password manager fill) the ops token, the form POSTs it to
/ops, and the answer is the dashboard. The dashboard's own buttons (refresh, block,
unblock) are small forms that POST the token again from a hidden field. So the token lives
only in that tab's page (sent with `Cache-Control: no-store`, `Referrer-Policy:
no-referrer` and a CSP that forbids every script), never in a cookie, a URL, browser
history or a log. Closing the tab is logging out. `GET /ops` with
`Authorization: Bearer ...` renders the dashboard directly (curl, screenshots).
Wrong tokens count against the client and everyone (ops/signin.py: 429 with a sentence
once over), and each is in the audit log, as is every block and unblock made here.

The sales token (SALES_TOKEN) signs in to the same page and sees only its requests
section (sales requests of the last 12 months: record a contact, restrict or lift a
restriction); the ops token sees that section below the rest. Each view of the section and
each of its actions is in the audit log under the token's name.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from html import escape
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ops import blocks, commands, queries, sales_requests
from ops.audit_log import OPS, PAGE, SALES, Actor
from ops.auth import bearer, ops_enabled, read_body
from ops.charts import bar_chart, gauge
from ops.records import SessionView
from ops.runtime import OpsRuntime
from policies.replies import text
from redisdb import keys
from redisdb.connection import REDIS_ERRORS
from server.errors import NO_STORE, ApiError

HEADERS = {
    **NO_STORE,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
MAX_FORM_BYTES = 4096
PAGE_BLOCK_REASON = "blocked from the ops page"

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#222}
header{background:#1f2d3d;color:#fff;padding:12px 24px;display:flex;align-items:center;gap:16px}
header h1{font-size:18px;margin:0;flex:1}
main{padding:16px 24px;max-width:1200px}
section{background:#fff;border:1px solid #e1e4e8;border-radius:6px;padding:12px 16px;
  margin:0 0 16px}
h2{font-size:15px;margin:0 0 8px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:16px}
.card{background:#fff;border:1px solid #e1e4e8;border-radius:6px;padding:10px 14px;min-width:140px}
.card b{display:block;font-size:22px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eee;font-size:13px}
th{color:#555;font-weight:600}
code{font-size:12px}
.flag{background:#fdecea;color:#a61b1b;border-radius:3px;padding:0 4px;margin-right:3px;
  font-size:12px}
.muted{color:#777}
form.inline{display:inline;margin:0}
button{font:inherit;padding:2px 10px;cursor:pointer}
.login{max-width:380px;margin:80px auto;background:#fff;padding:24px;
  border:1px solid #e1e4e8;border-radius:6px}
.login input{width:100%;padding:6px;margin:8px 0 12px;box-sizing:border-box;font:inherit}
.error{color:#a61b1b}
.notice{color:#1d6b2f}
details summary{cursor:pointer;color:#2e5c8a}
details p{white-space:pre-wrap;margin:4px 0;max-width:420px}
"""
REQUESTS_SINCE, REQUESTS_SHOWN = "365d", 100


def _html(body: str, title: str = "OneCallFlow demo · ops") -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="robots" content="noindex"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def login_page(error: str | None = None) -> str:
    message = f'<p class="error">{escape(error)}</p>' if error else ""
    return _html(
        '<form class="login" method="post" action="/ops"><h1>Ops</h1>'
        "<p>OneCallFlow voice demo: sign in with the ops token (or the sales token).</p>"
        f'{message}<label for="token">Token</label>'
        '<input type="password" id="token" name="token" autocomplete="current-password" '
        'required autofocus><input type="hidden" name="action" value="view">'
        '<button type="submit">Open the dashboard</button></form>'
    )


def _hhmm(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M")


def _when(ts: float | None) -> str:
    if not ts:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _button(token: str, label: str, **fields: str) -> str:
    hidden = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
        for k, v in {"token": token, **fields}.items()
    )
    return (
        f'<form class="inline" method="post" action="/ops">{hidden}'
        f'<button type="submit">{escape(label)}</button></form>'
    )


async def _active(runtime: OpsRuntime, now: float) -> list[dict[str, str]]:
    redis = runtime.ctx.redis
    members = [text(m) for m in await redis.zrangebyscore(keys.global_active(), now, "+inf")]
    if not members:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for session_id in members:
            pipe.hgetall(keys.session(session_id))
        rows = await pipe.execute()
    active = []
    for session_id, raw in zip(members, rows, strict=True):
        view = SessionView({text(k): text(v) for k, v in raw.items()})
        active.append(
            {
                "session_id": session_id,
                "persona": view.persona,
                # A token past its join window shows as never_joined before the sweeper
                # has closed it.
                "status": view.status(now, runtime.ctx.policies) if raw else "gone",
                "issued_at": view.fields.get("issued_at", ""),
                "started_at": view.fields.get("started_at", ""),
                "ua_family": view.fields.get("ua_family", ""),
            }
        )
    return active


def _request_row(token: str, r: dict[str, object]) -> str:
    reference = str(r["reference"])

    def cell(name: str) -> str:
        value = r.get(name)
        return escape(str(value)) if value not in (None, "") else '<span class="muted">—</span>'

    created = r["created_at"]
    contacted = r["contacted_at"]
    received = _when(float(created) if isinstance(created, int | float) else None)
    last = _when(float(contacted) if isinstance(contacted, int | float) else None)
    if r["restricted"]:
        contents = '<td colspan="5" class="muted">restricted: contents hidden</td>'
        actions = _button(token, "Lift restriction", action="unrestrict", reference=reference)
    else:
        message = escape(str(r.get("message") or ""))
        contents = (
            f"<td>{cell('name')}</td><td>{cell('company')}</td><td>{cell('email')}</td>"
            f"<td>{cell('phone')}</td><td><details><summary>read</summary><p>{message}</p>"
            "</details></td>"
        )
        actions = _button(token, "Contacted", action="contacted", reference=reference) + _button(
            token, "Restrict", action="restrict", reference=reference
        )
    return (
        f"<tr><td>{received}</td><td><code>{escape(reference)}</code></td>"
        f"<td>{cell('status')}</td>{contents}<td>{cell('language')}</td>"
        f"<td>{cell('persona')}</td><td>{cell('notify_status')}</td><td>{last}</td>"
        f"<td>{actions}</td></tr>"
    )


async def requests_section(runtime: OpsRuntime, token: str, credential: str) -> str:
    """Sales requests of the last 12 months, newest first (a view in the audit log)."""
    listed = await sales_requests.list_requests(
        runtime.ctx, since=REQUESTS_SINCE, limit=REQUESTS_SHOWN, actor=Actor(credential, "page")
    )
    rows: list[dict[str, object]] = listed["requests"]  # type: ignore[assignment]
    body = "".join(_request_row(token, r) for r in rows) or (
        '<tr><td colspan="13" class="muted">No sales request in the last 12 months.</td></tr>'
    )
    return (
        f"<section><h2>Sales requests ({len(rows)}, newest first)</h2><table><tr>"
        "<th>received</th><th>reference</th><th>status</th><th>name</th><th>company</th>"
        "<th>email</th><th>phone</th><th>message</th><th>language</th><th>demo agent</th>"
        f"<th>mail to sales</th><th>last contact</th><th></th></tr>{body}</table>"
        '<p class="muted">Rights by email (access, export, rectify, erase): '
        "<code>python -m ops requests ...</code> or /ops/requests (docs/sales-requests.md)."
        "</p></section>"
    )


async def sales_dashboard(runtime: OpsRuntime, token: str, notice: str | None = None) -> str:
    """What the sales token sees: the requests, nothing about visitors."""
    notice_html = f'<p class="notice">{escape(notice)}</p>' if notice else ""
    return _html(
        f"<header><h1>OneCallFlow demo · sales requests</h1><span>{_when(time.time())}</span>"
        f"{_button(token, 'Refresh', action='view')}</header><main>{notice_html}"
        f"{await requests_section(runtime, token, SALES)}</main>"
    )


async def dashboard(runtime: OpsRuntime, token: str, notice: str | None = None) -> str:
    ctx = runtime.ctx
    now = time.time()
    stats = await queries.stats(ctx, by="hour", count=24, now=now)
    top = await queries.top(ctx, limit=10, now=now)
    block_rows = await blocks.list_blocks(ctx)
    active = await _active(runtime, now)
    buckets: list[dict[str, object]] = stats["buckets"]  # type: ignore[assignment]
    total: dict[str, object] = stats["total"]  # type: ignore[assignment]
    today: dict[str, float] = stats["today"]  # type: ignore[assignment]
    labels = [_hhmm(float(b["start"])) for b in buckets]  # type: ignore[arg-type]
    issued = [float(b["issued"]) for b in buckets]  # type: ignore[arg-type]
    refused = [float(b["refused"]) for b in buckets]  # type: ignore[arg-type]
    never = [float(b["never_joined"]) for b in buckets]  # type: ignore[arg-type]
    limits = ctx.policies.limits

    cards = [
        ("Active sessions", f"{len(active)} / {limits.global_.concurrent_sessions}"),
        ("Issued (24 h)", str(total["issued"])),
        ("Refused (24 h)", str(total["refused"])),
        ("Never joined (24 h)", str(total["never_joined"])),
        ("Given back (24 h)", str(total["given_back"])),
        ("Minutes (24 h)", f"{float(total['minutes']):.1f}"),  # type: ignore[arg-type]
        (f"Est. cost (24 h, {stats['currency']})", f"{float(total['cost']):.2f}"),  # type: ignore[arg-type]
        ("Blocks", str(len(block_rows))),
    ]
    card_html = "".join(f'<div class="card">{escape(k)}<b>{escape(v)}</b></div>' for k, v in cards)

    active_rows = (
        "".join(
            f"<tr><td><code>{escape(a['session_id'])}</code></td><td>{escape(a['persona'])}</td>"
            f"<td>{escape(a['status'])}</td><td>{_when(float(a['issued_at'] or 0))}</td>"
            f"<td>{_when(float(a['started_at'] or 0))}</td><td>{escape(a['ua_family'])}</td></tr>"
            for a in active
        )
        or '<tr><td colspan="6" class="muted">No session holds a slot now.</td></tr>'
    )

    def top_row(v: dict[str, object]) -> str:
        flags = "".join(f'<span class="flag">{escape(str(f))}</span>' for f in v["flags"])  # type: ignore[attr-defined]
        visitor = str(v["visitor"])
        action = (
            f"blocked: {escape(str(v['block_reason']))}"
            if v["blocked"]
            else _button(token, "Block", action="block", visitor=visitor)
        )
        return (
            f"<tr><td><code>{escape(visitor)}</code></td><td>{v['sessions']}</td>"
            f"<td>{v['minutes']}</td><td>{v['refusals']}</td><td>{v['never_joined']}</td>"
            f"<td>{v['user_agents']}</td><td>{flags}</td><td>{action}</td></tr>"
        )

    top_rows = "".join(top_row(v) for v in top) or (
        '<tr><td colspan="8" class="muted">No visitor in the last 24 h.</td></tr>'
    )

    def block_row(b: dict[str, object]) -> str:
        visitor = str(b["visitor"])
        expires = b["expires_at"]
        return (
            f"<tr><td><code>{escape(visitor)}</code></td><td>{escape(str(b['by']))}</td>"
            f"<td>{escape(str(b['reason']))}</td>"
            f"<td>{_when(float(expires) if isinstance(expires, int | float) else None)}</td>"
            f"<td>{_button(token, 'Unblock', action='unblock', visitor=visitor)}</td></tr>"
        )

    block_html = "".join(block_row(b) for b in block_rows) or (
        '<tr><td colspan="5" class="muted">No visitor is blocked.</td></tr>'
    )

    notice_html = f'<p class="notice">{escape(notice)}</p>' if notice else ""
    chart = bar_chart(
        labels,
        [("issued", issued, "#2e86de"), ("refused", refused, "#c0392b"),
         ("never joined", never, "#95a5a6")],
        title="Sessions and refusals per hour, last 24 h (UTC)",
    )  # fmt: skip
    minutes = gauge(
        today["minutes_reserved"],
        today["minutes_ceiling"],
        title="Minutes used today against the daily ceiling",
        unit="min",
    )
    body = (
        f"<header><h1>OneCallFlow demo · ops</h1><span>{_when(now)}</span>"
        f"{_button(token, 'Refresh', action='view')}</header><main>{notice_html}"
        f'<div class="cards">{card_html}</div>'
        f"<section>{chart}</section><section>{minutes}</section>"
        "<section><h2>Active sessions</h2><table><tr><th>session</th><th>persona</th>"
        "<th>status</th><th>issued</th><th>started</th><th>browser</th></tr>"
        f"{active_rows}</table></section>"
        "<section><h2>Top visitors, last 24 h</h2><table><tr><th>visitor</th><th>sessions</th>"
        "<th>minutes</th><th>refusals</th><th>never joined</th><th>user agents</th>"
        f"<th>signals</th><th></th></tr>{top_rows}</table></section>"
        "<section><h2>Blocks</h2><table><tr><th>visitor</th><th>by</th><th>reason</th>"
        f"<th>expires</th><th></th></tr>{block_html}</table></section>"
        f"{await requests_section(runtime, token, OPS)}</main>"
    )
    return _html(body)


async def request_action(runtime: OpsRuntime, action: str, reference: str, credential: str) -> str:
    """A requests-section button: record a contact, restrict, lift a restriction."""
    actor = Actor(credential, "page")
    try:
        if action == "contacted":
            await sales_requests.contacted(runtime.ctx, reference=reference, actor=actor)
            return f"Contact recorded for {reference}: kept 12 months from now."
        lift = action == "unrestrict"
        await sales_requests.restrict(runtime.ctx, reference=reference, lift=lift, actor=actor)
    except sales_requests.RequestInputError as exc:
        return str(exc)
    return f"Restriction lifted for {reference}." if lift else f"{reference} is restricted."


REQUEST_ACTIONS = ("contacted", "restrict", "unrestrict")


def build_page(runtime: OpsRuntime) -> APIRouter:
    settings = runtime.ctx.settings
    accepted = {OPS: settings.ops_token, SALES: settings.sales_token}
    configured = {name: value for name, value in accepted.items() if value}
    router = APIRouter()

    def respond(
        html: str, status: int = 200, headers: dict[str, str] | None = None
    ) -> HTMLResponse:
        return HTMLResponse(html, status_code=status, headers={**HEADERS, **(headers or {})})

    async def render(token: str, credential: str, notice: str | None = None) -> HTMLResponse:
        try:
            if credential == SALES:
                return respond(await sales_dashboard(runtime, token, notice))
            return respond(await dashboard(runtime, token, notice))
        except REDIS_ERRORS:
            runtime.on_redis_error("ops_page")
            return respond(_html("<main><p class='error'>Redis is unreachable.</p></main>"), 503)

    async def signed_in(request: Request, token: str) -> str | HTMLResponse:
        """The credential `token` is (OPS_TOKEN, SALES_TOKEN), else the login page saying
        why not."""
        try:
            credential = await runtime.signin.which(request, token, configured, "page")
        except ApiError as exc:  # too many failed sign-ins
            minutes = -(-int(exc.headers.get("Retry-After", "60")) // 60)
            return respond(
                login_page(f"Too many failed sign-ins. Try again in {minutes} minute(s)."),
                exc.status,
                exc.headers,
            )
        return credential or respond(login_page("That token is not valid."), 401)

    @router.get("/ops")
    async def page(request: Request) -> HTMLResponse:
        ops_enabled(" ".join(configured.values()))
        given = bearer(request)
        if not given:
            return respond(login_page())
        credential = await signed_in(request, given)
        if isinstance(credential, HTMLResponse):
            return credential
        return await render(given, credential)

    @router.post("/ops")
    async def page_post(request: Request) -> HTMLResponse:
        ops_enabled(" ".join(configured.values()))
        try:
            body = await read_body(request, MAX_FORM_BYTES)
        except ApiError:
            return respond(login_page("Request too large."), 413)
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        token = form.get("token", "")
        if not token:
            return respond(login_page("That token is not valid."), 401)
        credential = await signed_in(request, token)
        if isinstance(credential, HTMLResponse):
            return credential
        action, visitor = form.get("action", "view"), form.get("visitor", "")
        notice = None
        try:
            if action in REQUEST_ACTIONS:
                notice = await request_action(
                    runtime, action, form.get("reference", ""), credential
                )
            elif action in ("block", "unblock") and credential != OPS:
                # The sales token sees no visitor and may not act on one.
                return respond(
                    _html("<main><p class='error'>The sales token cannot do that.</p></main>"),
                    403,
                )
            elif action == "unblock":
                done = await commands.unblock(runtime.ctx, visitor=visitor, actor=PAGE)
                notice = (
                    f"Unblocked {visitor}." if done["unblocked"] else f"{visitor} was not blocked."
                )
            elif action == "block":
                await commands.block(
                    runtime.ctx, visitor=visitor, duration=None, reason=PAGE_BLOCK_REASON,
                    actor=PAGE,
                )  # fmt: skip
                notice = f"Blocked {visitor} for {runtime.ctx.rules.blocks.default_days} days."
        except blocks.BlockError as exc:
            notice = str(exc)
        except REDIS_ERRORS:
            runtime.on_redis_error("ops_page")
            return respond(_html("<main><p class='error'>Redis is unreachable.</p></main>"), 503)
        return await render(token, credential, notice)

    return router
