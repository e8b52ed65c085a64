"""Strict JSON for job arguments and results: what cannot round-trip is refused, not mangled.

Refused means a TypeError that says which part of the value cannot be stored and why, raised
before any SQL runs. Whatever the value holds (a cycle, a huge int, a lone surrogate, an
object whose `__repr__` raises), `dumps` raises nothing else.
"""

from __future__ import annotations

import json
import math
import reprlib
from typing import Any

_SCALARS = (str, int, bool, type(None))
# Deeper values are refused: checking and encoding them recurses, and PostgreSQL's jsonb
# parser has a depth limit of its own.
MAX_DEPTH = 500
# Python refuses to turn ints of more than sys.get_int_max_str_digits() digits into text
# (3.10.7+); ints of up to this many bits have fewer digits than the lowest limit it allows
# (640), so only longer ones are tried.
_SAFE_INT_BITS = 2000
_DESCRIBE = reprlib.Repr()
_DESCRIBE.maxstring = _DESCRIBE.maxother = 80


def _describe(value: Any) -> str:
    """A short repr of `value` for an error message; never raises."""
    try:
        text = _DESCRIBE.repr(value)
    except Exception as exc:  # a __repr__ that raises must not hide the real problem
        return f"<{type(value).__name__} whose repr() raised {type(exc).__name__}>"
    if len(text) > 80:
        text = text[:77] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _describe_error(exc: BaseException) -> str:
    """The first 200 characters of an exception's message; never raises."""
    try:
        text = " ".join(str(exc).split())[:200]
    except Exception:
        return "its message could not be read"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class _Key(str):
    """A step into a dict in a trail (a plain int is a step into a list)."""


class _Refused(Exception):
    def __init__(self, problem: str, trail: list[Any]) -> None:
        self.problem = problem
        self.trail = list(trail)


def _where(root: str, trail: list[Any]) -> str:
    """The path of the offending part, such as `args[0]['when']`: made only when refused, so
    that accepting a value costs no formatting."""
    steps = [
        f"[{_describe(str(step))}]" if isinstance(step, _Key) else f"[{step}]" for step in trail
    ]
    if len(steps) > 12:  # deep nesting: the start and the end say enough
        steps = [*steps[:6], f"...({len(steps) - 12} more)...", *steps[-6:]]
    return root + "".join(steps)


def _check_str(value: str, trail: list[Any]) -> None:
    if "\x00" in value:
        # PostgreSQL's jsonb refuses \u0000; caught here, it cannot fail a write later.
        raise _Refused("contains a NUL character (\\x00), which PostgreSQL cannot store", trail)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            lone = value[exc.start : exc.end].encode("utf-8", "backslashreplace").decode()
            raise _Refused(
                f"cannot be encoded as UTF-8: it holds a lone surrogate ({lone}) at character "
                f"{exc.start}; decode text with errors='replace', or pass bytes as base64",
                trail,
            ) from None


def _check(value: Any, trail: list[Any], seen: set[int]) -> None:
    if isinstance(value, str):
        _check_str(value, trail)
        return
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > _SAFE_INT_BITS:
            try:
                int.__repr__(value)
            except ValueError:
                raise _Refused(
                    f"is an int of {value.bit_length()} bits, more digits than Python turns "
                    "into text (sys.set_int_max_str_digits); pass it as a str",
                    trail,
                ) from None
        return
    if isinstance(value, _SCALARS):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Refused(f"is {value!r}", trail)
        return
    if isinstance(value, (list, tuple, dict)):
        if len(trail) >= MAX_DEPTH:
            raise _Refused(f"is nested more than {MAX_DEPTH} levels deep", trail)
        if id(value) in seen:
            raise _Refused("refers to itself (a value that contains itself)", trail)
        seen.add(id(value))
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise _Refused(
                        f"has a key {_describe(key)} of type {type(key).__name__}; "
                        "JSON object keys must be str",
                        trail,
                    )
                trail.append(_Key(key))
                try:
                    _check_str(key, trail[:-1])
                except _Refused as refused:
                    refused.problem = f"has a key {_describe(key)} that {refused.problem}"
                    raise
                _check(item, trail, seen)
                trail.pop()
        else:
            for index, item in enumerate(value):
                trail.append(index)
                _check(item, trail, seen)
                trail.pop()
        seen.discard(id(value))
        return
    raise _Refused(
        f"is a {type(value).__name__} ({_describe(value)}); "
        "pass JSON types (str, int, float, bool, None, list, dict) such as an id or an ISO date",
        trail,
    )


def dumps(value: Any, what: str = "value", path: str = "value") -> str:
    """Serialise `value` to compact JSON, or raise TypeError naming the offending part."""
    if value is None:  # what most tasks return
        return "null"
    try:
        _check(value, [], set())
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except _Refused as refused:
        raise TypeError(
            f"{what} cannot be stored as JSON: {_where(path, refused.trail)} {refused.problem}"
        ) from None
    except Exception as exc:  # a subclass whose methods raise, or what the checks missed
        raise TypeError(
            f"{what} cannot be stored as JSON: {path} could not be encoded "
            f"({type(exc).__name__}: {_describe_error(exc)})"
        ) from None


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
