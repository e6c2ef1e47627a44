"""Plain-text tables for the CLI (aligned columns, no colours: pipes and cron mail too)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

Column = tuple[str, Callable[[dict[str, object]], object]]


def when(ts: object) -> str:
    if not isinstance(ts, int | float) or ts <= 0:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def cell(value: object) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:.0f}"
    if isinstance(value, list | tuple | set):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


def render(rows: Sequence[dict[str, object]], columns: Sequence[Column], empty: str) -> str:
    if not rows:
        return empty
    table = [[header for header, _ in columns]]
    table += [[cell(get(row)) for _, get in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
             for line in table]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
