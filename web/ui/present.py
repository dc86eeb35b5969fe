"""How values look on the inspector's pages: JSON pretty, long values folded, times, durations.

Everything here returns plain text; the templates escape it (Jinja autoescape), so model
and tool output is always shown as text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: A value longer than this many characters, or lines, is folded behind a one-line preview.
FOLD_CHARS = 800
FOLD_LINES = 16
PREVIEW_CHARS = 110


@dataclass(frozen=True)
class Shown:
    """A value ready to show.

    Attributes:
        text: the whole value: pretty JSON (2-space indent) or the text itself.
        kind: ``json`` (an object or array, also one sent as JSON text), ``text`` or ``scalar``.
        preview: a one-line start of ``text`` when it is folded, else None.
        lines: lines of ``text``.
    """

    text: str
    kind: str
    preview: str | None
    lines: int


def pretty(value: Any) -> str:
    """JSON with a 2-space indent, non-ASCII kept as is."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def shown(value: Any, fold_chars: int | None = None, fold_lines: int | None = None) -> Shown:
    """Present ``value``: objects and arrays (or JSON text of one, like a tool call's
    arguments) as pretty JSON, strings as text; folded when longer than ``fold_chars``
    characters or ``fold_lines`` lines (default :data:`FOLD_CHARS`, :data:`FOLD_LINES`)."""
    if isinstance(value, str):
        parsed = _json_container(value)
        text, kind = (pretty(parsed), "json") if parsed is not None else (value, "text")
    elif isinstance(value, (dict, list)):
        text, kind = pretty(value), "json"
    else:
        text, kind = json.dumps(value, default=str), "scalar"
    lines = text.count("\n") + 1
    preview = None
    if len(text) > (fold_chars or FOLD_CHARS) or lines > (fold_lines or FOLD_LINES):
        flat = " ".join(text.split())
        preview = flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1] + "…"
    return Shown(text, kind, preview, lines)


def _json_container(text: str) -> Any:
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return None
    try:
        value = json.loads(stripped)
    except ValueError:
        return None
    return value if isinstance(value, (dict, list)) else None


def short(value: Any, limit: int = 90) -> str:
    """One line of at most ``limit`` characters."""
    text = " ".join(str(value if value is not None else "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_time(iso: str | None) -> datetime | None:
    """An ISO 8601 time of a record or status (``...Z``), or None."""
    if not iso:
        return None
    try:
        moment = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def when(iso: str | None) -> str:
    """``2026-11-29 19:20:01 UTC``, or an em dash."""
    moment = parse_time(iso)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


def from_ms(epoch_ms: float | None) -> str:
    """Epoch milliseconds as :func:`when` shows a time."""
    if epoch_ms is None:
        return "—"
    return datetime.fromtimestamp(float(epoch_ms) / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def clock(iso: str | None) -> str:
    """``19:20:01.123`` (UTC), or an em dash."""
    moment = parse_time(iso)
    return moment.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3] if moment else "—"


def duration(ms: float | None) -> str:
    """``840 ms``, ``3.42 s``, ``2 min 05 s``, ``1 h 02 min``."""
    if ms is None:
        return "—"
    if ms == 0:
        return "0 ms"
    if ms < 1000:
        return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.2g} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def span_ms(start: str | None, end: str | None) -> float | None:
    """Milliseconds from ``start`` to ``end`` (now when ``end`` is None), or None."""
    begin = parse_time(start)
    if begin is None:
        return None
    finish = parse_time(end) or datetime.now(UTC)
    return max(0.0, (finish - begin).total_seconds() * 1000)


def label(key: str) -> str:
    """A field name as a label: ``history_len`` -> ``history len``."""
    return key.replace("_", " ")


FILTERS: dict[str, Callable[..., Any]] = {
    "shown": shown,
    "short": short,
    "when": when,
    "clock": clock,
    "from_ms": from_ms,
    "duration": duration,
    "label": label,
    "pretty": pretty,
}
