"""How the read-side commands (`status`, `workers`, `queues`, `jobs list/show`) show values to
people: durations and ages in short human units, rates, error lines, and dataclasses as JSON."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from pgqueue.cli._common import to_json


def duration(seconds: float | None) -> str:
    """850ms, 12.3s, 5m03s, 2h05m, 3d04h; "-" for None."""
    if seconds is None:
        return "-"
    if seconds < 0:
        seconds = 0.0
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def ago(moment: datetime | None, now: datetime | None) -> str:
    """How long before `now` (the database's clock) `moment` was: "5m03s ago"."""
    if moment is None or now is None:
        return "-"
    seconds = (now - moment).total_seconds()
    if seconds < 0:
        return f"in {duration(-seconds)}"
    return f"{duration(seconds)} ago"


def rate(per_second: float) -> str:
    """Jobs per second with two significant decimals ("0.17", "12.5", "1204")."""
    if per_second == 0:
        return "0"
    if per_second < 10:
        return f"{per_second:.2f}"
    if per_second < 100:
        return f"{per_second:.1f}"
    return f"{per_second:.0f}"


def error_line(error: Any, width: int = 80) -> str:
    """`Type: message` of a stored error on one line, cut to `width` characters."""
    if not error:
        return ""
    if isinstance(error, dict):
        text = f"{error.get('type') or 'Error'}: {error.get('message') or ''}"
    else:
        text = str(error)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def as_json(value: Any) -> Any:
    """A dataclass (or a structure of them) ready for print_json."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json(dataclasses.asdict(value))
    return to_json(value)
