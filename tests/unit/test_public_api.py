"""Every public name of `pgqueue` resolves, although each is imported on first use."""

from __future__ import annotations

import pytest

import pgqueue


@pytest.mark.parametrize("name", pgqueue.__all__)
def test_every_public_name_resolves_from_its_module(name: str) -> None:
    value = getattr(pgqueue, name)
    namespace: dict[str, object] = {}
    exec(f"from pgqueue import {name}", namespace)
    assert namespace[name] is value
    assert name in dir(pgqueue)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        pgqueue.Nope  # type: ignore[attr-defined]  # noqa: B018


def test_a_star_import_gives_every_public_name() -> None:
    namespace: dict[str, object] = {}
    exec("from pgqueue import *", namespace)
    assert set(pgqueue.__all__) <= set(namespace)
