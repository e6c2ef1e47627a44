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
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from html import escape
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ops import blocks, commands, queries
from ops.audit_log import PAGE
from ops.auth import OpsHttpError, bearer, ops_enabled, read_body
from ops.charts import bar_chart, gauge
from ops.records import SessionView, text
from ops.runtime import OpsRuntime
from policies import keys
from sessions.redis_conn import REDIS_ERRORS

HEADERS = {
    "Cache-Control": "no-store",
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
"""


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
        "<p>OneCallFlow voice demo: sign in with the ops token.</p>"
        f'{message}<label for="token">Ops token</label>'
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
        f"<th>expires</th><th></th></tr>{block_html}</table></section></main>"
    )
    return _html(body)


def build_page(runtime: OpsRuntime) -> APIRouter:
    expected = runtime.ctx.settings.ops_token
    router = APIRouter()

    def respond(
        html: str, status: int = 200, headers: dict[str, str] | None = None
    ) -> HTMLResponse:
        return HTMLResponse(html, status_code=status, headers={**HEADERS, **(headers or {})})

    async def render(token: str, notice: str | None = None) -> HTMLResponse:
        try:
            return respond(await dashboard(runtime, token, notice))
        except REDIS_ERRORS:
            runtime.on_redis_error("ops_page")
            return respond(_html("<main><p class='error'>Redis is unreachable.</p></main>"), 503)

    async def signed_in(request: Request, token: str) -> HTMLResponse | None:
        """None if `token` is the ops token, else the login page saying why not."""
        try:
            if await runtime.signin.check(request, token, expected, "page"):
                return None
        except OpsHttpError as exc:  # too many failed sign-ins
            minutes = -(-int(exc.headers.get("Retry-After", "60")) // 60)
            return respond(
                login_page(f"Too many failed sign-ins. Try again in {minutes} minute(s)."),
                exc.status,
                exc.headers,
            )
        return respond(login_page("That token is not valid."), 401)

    @router.get("/ops")
    async def page(request: Request) -> HTMLResponse:
        ops_enabled(expected)
        given = bearer(request)
        if not given:
            return respond(login_page())
        refused = await signed_in(request, given)
        return refused or await render(given)

    @router.post("/ops")
    async def page_post(request: Request) -> HTMLResponse:
        ops_enabled(expected)
        try:
            body = await read_body(request, MAX_FORM_BYTES)
        except OpsHttpError:
            return respond(login_page("Request too large."), 413)
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        token = form.get("token", "")
        if not token:
            return respond(login_page("That token is not valid."), 401)
        refused = await signed_in(request, token)
        if refused is not None:
            return refused
        action, visitor = form.get("action", "view"), form.get("visitor", "")
        notice = None
        try:
            if action == "unblock":
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
        return await render(token, notice)

    return router
