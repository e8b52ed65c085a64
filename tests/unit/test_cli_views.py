"""How the read-side commands parse their options and show durations (no database)."""

from __future__ import annotations

import argparse

import pytest

from pgqueue.cli import build_parser
from pgqueue.cli._common import Parents
from pgqueue.cli._show import duration, error_line, rate


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "-"),
        (-3, "0ms"),
        (0.0042, "4ms"),
        (0.85, "850ms"),
        (12.34, "12.3s"),
        (303, "5m03s"),
        (7500, "2h05m"),
        (3 * 86400 + 4 * 3600 + 59, "3d04h"),
    ],
)
def test_durations_are_short_and_human(seconds: float | None, shown: str) -> None:
    assert duration(seconds) == shown


def test_rates_keep_two_significant_decimals() -> None:
    assert [rate(x) for x in (0, 0.1666, 12.46, 1204.4)] == ["0", "0.17", "12.5", "1204"]


def test_an_error_line_is_one_line_cut_to_its_width() -> None:
    error = {"type": "ValueError", "message": "first\nsecond " + "x" * 100}
    line = error_line(error, 40)
    assert "\n" not in line and len(line) == 40 and line.endswith("…")
    assert line.startswith("ValueError: first second")
    assert error_line(None) == ""


def test_queues_takes_the_common_options_without_an_action() -> None:
    args = build_parser().parse_args(["queues", "--dsn", "postgresql:///x", "--json"])
    assert (args.action, args.dsn, args.json) == (None, "postgresql:///x", True)


def test_an_actions_defaults_do_not_overwrite_options_given_before_it() -> None:
    # `pgqueue queues --dsn X pause NAME`: the group's parser reads --dsn, then the action's;
    # built from suppressed parents, the action leaves what it was not given alone.
    group_parents, action_parents = Parents(), Parents(suppress_defaults=True)
    parser = argparse.ArgumentParser()
    group = parser.add_subparsers(dest="command").add_parser(
        "queues", parents=[group_parents.common, group_parents.output]
    )
    action = group.add_subparsers(dest="action").add_parser(
        "pause", parents=[action_parents.common, action_parents.output]
    )
    action.add_argument("name")

    before = parser.parse_args(["queues", "--dsn", "X", "pause", "reports"])
    after = parser.parse_args(["queues", "pause", "reports", "--dsn", "Y", "--json"])
    neither = parser.parse_args(["queues", "pause", "reports"])

    assert (before.dsn, before.json, before.name) == ("X", False, "reports")
    assert (after.dsn, after.json) == ("Y", True)
    assert (neither.dsn, neither.json) == (None, False)
    assert neither.log_level == group_parents.common.get_default("log_level")
