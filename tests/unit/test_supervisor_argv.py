"""The command line a `pgqueue worker --processes N` supervisor gives each of its children."""

from __future__ import annotations

from pgqueue.cli import build_parser
from pgqueue.cli.worker import _child_argv


def test_a_child_gets_every_option_given_with_its_own_name_and_metrics_port() -> None:
    parser = build_parser()
    given = parser.parse_args(
        [
            "worker",
            "--app=tests.acceptance.apps:app",
            "--dsn",
            "postgresql://u@db/q?application_name=a b",
            "-Q",
            "a,b",
            "-c",
            "3",
            "--proc",  # an abbreviation, as argparse accepts it
            "4",
            "--name=-w",  # a value that looks like an option
            "--metrics-port=9100",
            "--no-scheduler",
            "--pool",
            "process",
            "--shutdown-timeout",
            "5.5",
            "--claim-ahead",
            "0",  # a value that is false, but given
            "--retention",
            "0",
            "--log-format",
            "json",
        ]
    )
    child = parser.parse_args(_child_argv(given, 3))
    assert vars(child) == vars(given) | {"name": "-w-3", "metrics_port": 9102, "processes": 1}


def test_without_a_name_each_child_keeps_its_default_and_port_0_stays_any_port() -> None:
    parser = build_parser()
    given = parser.parse_args(["worker", "--processes", "2", "--metrics-port", "0"])
    argv = _child_argv(given, 2)
    assert not any(arg.startswith(("--name", "--processes")) for arg in argv)
    assert "--metrics-port=0" in argv
    assert vars(parser.parse_args(argv)) == vars(given) | {"processes": 1}
