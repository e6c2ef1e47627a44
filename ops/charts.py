"""Inline SVG charts for the ops page: drawn on the server, no script, no third party."""

from __future__ import annotations

from html import escape

FONT = 'font-family="system-ui, sans-serif" font-size="11" fill="#444"'


def _fmt(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def bar_chart(
    labels: list[str],
    series: list[tuple[str, list[float], str]],
    *,
    title: str,
    width: int = 760,
    height: int = 220,
    label_every: int = 3,
) -> str:
    """Grouped bars: one group per label, one bar per series (name, values, colour)."""
    left, right, top, bottom = 36, 8, 28, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([v for _, values, _ in series for v in values] + [1.0])
    # A round top for the axis: 1, 2, 5 x 10^n.
    scale = 1.0
    while scale * 10 <= peak:
        scale *= 10
    axis_max = next(m * scale for m in (1, 2, 5, 10) if m * scale >= peak)
    group_w = plot_w / max(len(labels), 1)
    bar_w = max(1.0, (group_w - 2) / max(len(series), 1))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" aria-label="{escape(title)}">',
        f'<text x="{left}" y="16" {FONT} font-size="13" font-weight="600">{escape(title)}</text>',
    ]
    for frac in (0, 0.5, 1):
        y = top + plot_h * (1 - frac)
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" {FONT}>'
            f"{_fmt(axis_max * frac)}</text>"
        )
    for i, label in enumerate(labels):
        x0 = left + i * group_w + 1
        for j, (name, values, colour) in enumerate(series):
            value = values[i]
            h = plot_h * value / axis_max
            x = x0 + j * bar_w
            parts.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{escape(label)} {escape(name)}: '
                f"{_fmt(value)}</title></rect>"
            )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x0 + group_w / 2:.1f}" y="{height - bottom + 14}" '
                f'text-anchor="middle" {FONT}>{escape(label)}</text>'
            )
    legend_x = left
    for name, _, colour in series:
        parts.append(
            f'<rect x="{legend_x}" y="{height - 12}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{legend_x + 14}" y="{height - 3}" {FONT}>{escape(name)}</text>'
        )
        legend_x += 24 + 7 * len(name)
    parts.append("</svg>")
    return "".join(parts)


def gauge(value: float, ceiling: float, *, title: str, unit: str, width: int = 760) -> str:
    """A horizontal bar: value against a ceiling (turns orange past 75 %, red past 90 %)."""
    height, left, bar_h = 64, 8, 20
    frac = min(value / ceiling, 1.0) if ceiling > 0 else 0.0
    colour = "#c0392b" if frac >= 0.9 else "#e67e22" if frac >= 0.75 else "#2e86de"
    inner = width - 2 * left
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" aria-label="{escape(title)}">'
        f'<text x="{left}" y="16" {FONT} font-size="13" font-weight="600">{escape(title)}</text>'
        f'<rect x="{left}" y="26" width="{inner}" height="{bar_h}" fill="#eee" rx="3"/>'
        f'<rect x="{left}" y="26" width="{inner * frac:.1f}" height="{bar_h}" '
        f'fill="{colour}" rx="3"/>'
        f'<text x="{left}" y="{26 + bar_h + 14}" {FONT}>{_fmt(value)} / {_fmt(ceiling)} '
        f"{escape(unit)} ({frac * 100:.0f} %)</text></svg>"
    )
