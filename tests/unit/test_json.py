"""Strict JSON: whatever would not come back unchanged is refused, naming where it is."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from pgqueue import _json


def test_json_types_round_trip() -> None:
    value = {"s": "é", "i": 2**62, "f": 1.5, "b": True, "n": None, "l": [1, [2]], "d": {"k": {}}}
    assert json.loads(_json.dumps(value)) == value


def test_tuples_become_lists() -> None:
    assert _json.dumps((1, (2, 3))) == "[1,[2,3]]"
    assert _json.loads(_json.dumps({"pair": ("a", "b")})) == {"pair": ["a", "b"]}


def test_output_is_compact_and_keeps_unicode() -> None:
    assert _json.dumps({"a": [1, 2], "name": "Zoë"}) == '{"a":[1,2],"name":"Zoë"}'


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_floats_are_refused(number: float) -> None:
    with pytest.raises(TypeError, match=r"args\[0\]\['x'\] is"):
        _json.dumps([{"x": number}], "task arguments", "args")


@pytest.mark.parametrize("key", [1, 1.5, None, ("a", "b")])
def test_non_string_keys_are_refused(key: Any) -> None:
    with pytest.raises(TypeError, match=r"kwargs\['outer'\] has a key .* JSON object keys must"):
        _json.dumps({"outer": {key: "v"}}, "task arguments", "kwargs")


@pytest.mark.parametrize("obj", [object(), {1, 2}, date(2024, 1, 1), b"bytes", 1 + 2j])
def test_other_objects_are_refused_naming_the_path_and_type(obj: Any) -> None:
    with pytest.raises(TypeError) as info:
        _json.dumps({"items": [1, obj]}, "the task's return value", "result")
    message = str(info.value)
    assert message.startswith("the task's return value cannot be stored as JSON")
    assert "result['items'][1]" in message
    assert type(obj).__name__ in message


def test_strings_with_nul_characters_are_refused() -> None:
    # PostgreSQL's jsonb cannot store U+0000; refusing it here beats a failed write later.
    with pytest.raises(TypeError, match=r"value\[0\] contains a NUL"):
        _json.dumps(["a\x00b"])
    with pytest.raises(TypeError, match=r"value has a key 'k\\x00' that contains a NUL"):
        _json.dumps({"k\x00": 1})


def test_loads_accepts_text_bytes_and_already_decoded_values() -> None:
    assert _json.loads('{"a":1}') == {"a": 1}
    assert _json.loads(b"[1,2]") == [1, 2]
    assert _json.loads([1, 2]) == [1, 2]
    assert _json.loads(None) is None


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


class _ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class _ItemsRaise(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        raise RuntimeError("no items \ud83d")


def _self_referencing() -> list[Any]:
    value: list[Any] = ["a"]
    value.append({"back": value})
    return value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            ["ok", "lone \ud83d"],
            r"result\[1\] cannot be encoded as UTF-8: .*lone surrogate \(\\ud83d\)",
        ),
        ({"k\udc80": 1}, r"result has a key 'k\\udc80' that cannot be encoded as UTF-8"),
        ([10**5000], r"result\[0\] is an int of \d+ bits"),
        (_self_referencing(), r"result\[1\]\['back'\] refers to itself"),
        (_nested(100_000), r"result\[0\]\[0\].*more\).*is nested more than 500 levels deep"),
        ({"x": _ReprRaises()}, r"result\['x'\] is a _ReprRaises \(<_ReprRaises instance at"),
        ({_ReprRaises(): 1}, r"result has a key <_ReprRaises instance at .* JSON object keys"),
        (_ItemsRaise(a=1), r"result could not be encoded \(RuntimeError: no items \\ud83d\)"),
    ],
    ids=["surrogate", "surrogate-key", "huge-int", "cycle", "deep", "repr", "repr-key", "items"],
)
def test_values_that_cannot_be_stored_are_refused_with_a_type_error_naming_them(
    value: Any, message: str
) -> None:
    """Whatever a value holds, refusing it raises TypeError and nothing else (these raised
    UnicodeEncodeError later, ValueError, RecursionError or the repr's own error)."""
    with pytest.raises(TypeError, match=message) as info:
        _json.dumps(value, "the task's return value", "result")
    str(info.value).encode("utf-8")  # the message itself can always be stored and logged
    assert len(str(info.value)) < 1000


def test_large_ints_within_pythons_limit_and_deep_values_within_the_limit_round_trip() -> None:
    value = {"big": 10**1000, "deep": _nested(_json.MAX_DEPTH - 2)}
    assert json.loads(_json.dumps(value)) == value
