"""What every command shares: the options `--dsn`, `--log-level` and `--app`, the App and
connection they name, and output as a table for people or as JSON (`--json`) for scripts."""

from __future__ import annotations

import argparse
import datetime
import decimal
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg

from pgqueue._loading import load_app
from pgqueue.app import App

EXIT_ERROR = 1
EXIT_USAGE = 2


class Parents:
    """The parent parsers a subcommand adds: `common` (--dsn, --log-level, --log-format),
    `app` (--app) and `output` (--json).

    With `suppress_defaults`, an option not given is left out of the namespace instead of set
    to its default: for the actions under a group whose own parser takes the same options
    (`pgqueue queues --dsn X pause NAME`), so that the action's defaults do not overwrite what
    was given before it.
    """

    def __init__(self, suppress_defaults: bool = False) -> None:
        def default(value: Any) -> Any:
            return argparse.SUPPRESS if suppress_defaults else value

        self.common = argparse.ArgumentParser(add_help=False)
        self.common.add_argument(
            "--dsn",
            default=default(None),
            help="PostgreSQL DSN or URL (default: $PGQUEUE_DSN, then $DATABASE_URL, then the "
            "embedded development database)",
        )
        self.common.add_argument(
            "--log-level",
            default=default(os.environ.get("PGQUEUE_LOG_LEVEL", "INFO")),
            choices=["DEBUG", "INFO", "WARNING", "ERROR"],
            help="log level (default: INFO)",
        )
        self.common.add_argument(
            "--log-format",
            default=default(os.environ.get("PGQUEUE_LOG_FORMAT", "text")),
            choices=["text", "json"],
            help="log lines as text, or one JSON object a line with the job's id, task, "
            "attempt, duration and outcome as fields (default: $PGQUEUE_LOG_FORMAT, else text)",
        )
        self.app = argparse.ArgumentParser(add_help=False)
        self.app.add_argument(
            "--app",
            default=default(None),
            help="the App to load, as module:attribute (default: $PGQUEUE_APP)",
        )
        self.output = argparse.ArgumentParser(add_help=False)
        self.output.add_argument(
            "--json",
            action="store_true",
            default=default(False),
            help="print JSON for scripts instead of a table",
        )


def app_or_dsn(args: argparse.Namespace) -> App:
    app = load_app(args.app) if (args.app or os.environ.get("PGQUEUE_APP")) else App()
    if args.dsn:
        app.set_dsn(args.dsn)
    return app


def connected(args: argparse.Namespace) -> tuple[App, psycopg.Connection[Any]]:
    from pgqueue.revisions import check_schema

    app = app_or_dsn(args)
    conn = app.connect(autocommit=True)
    check_schema(conn)
    return app, conn


def when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S%z") if value is not None else "-"


def to_json(value: Any) -> Any:
    """JSON-ready: datetimes as ISO 8601, timedeltas as seconds, Decimals as numbers."""
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(v) for v in value]
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def print_json(value: Any) -> None:
    json.dump(to_json(value), sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def format_table(
    rows: Iterable[Sequence[Any]], headers: Sequence[str], right: Iterable[int] = ()
) -> str:
    """Rows as aligned columns under `headers` (columns whose index is in `right` are
    right-aligned, for numbers); None shows as "-"."""
    cells = [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, v in enumerate(row):
            widths[i] = max(widths[i], len(v))
    aligned = set(right)

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(widths[i]) if i in aligned else v.ljust(widths[i]) for i, v in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(list(headers)), *(line(row) for row in cells)])


def tcp_port(text: str) -> int:
    """An argparse type: a TCP port, 0-65535 (0: any free port)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r} (0-65535)")
    return port


__all__ = [
    "EXIT_ERROR",
    "EXIT_USAGE",
    "Parents",
    "app_or_dsn",
    "connected",
    "format_table",
    "load_app",
    "print_json",
    "tcp_port",
    "to_json",
    "when",
]
