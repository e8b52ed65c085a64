"""Strict JSON for job arguments and results: what cannot round-trip is refused, not mangled."""

from __future__ import annotations

import json
import math
from typing import Any

_SCALARS = (str, int, bool, type(None))


def _check(value: Any, what: str, path: str) -> None:
    if isinstance(value, str) and "\x00" in value:
        # PostgreSQL's jsonb refuses \u0000; caught here, it cannot fail a write later.
        raise TypeError(
            f"{what} cannot be stored as JSON: {path} contains a NUL character (\\x00), "
            "which PostgreSQL cannot store"
        )
    if isinstance(value, _SCALARS):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{what} cannot be stored as JSON: {path} is {value!r}")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check(item, what, f"{path}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{what} cannot be stored as JSON: {path} has a key {key!r} of type "
                    f"{type(key).__name__}; JSON object keys must be str"
                )
            _check(key, what, f"{path} key {key!r}")
            _check(item, what, f"{path}[{key!r}]")
        return
    raise TypeError(
        f"{what} cannot be stored as JSON: {path} is a {type(value).__name__} ({value!r:.80}); "
        "pass JSON types (str, int, float, bool, None, list, dict) such as an id or an ISO date"
    )


def dumps(value: Any, what: str = "value", path: str = "value") -> str:
    """Serialise `value` to compact JSON, or raise TypeError naming the offending part."""
    if value is None:  # what most tasks return
        return "null"
    _check(value, what, path)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def loads(value: Any) -> Any:
    """Decode a JSON column that a driver may hand back as text or already decoded. Empty
    arguments, as most jobs have, skip the decoder (a fresh list or dict each time)."""
    if value == "[]":
        return []
    if value == "{}":
        return {}
    if isinstance(value, (str, bytes, bytearray)):
        return json.loads(value)
    return value
