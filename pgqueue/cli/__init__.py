"""`pgqueue COMMAND`: a thin shell over the package, one module per command group.

Errors a user can meet (bad DSN, unreachable database, unmigrated schema, bad options) end
with one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

import psycopg

from pgqueue import _logging
from pgqueue._loading import load_app
from pgqueue._version import __version__
from pgqueue.cli._common import EXIT_ERROR, EXIT_USAGE, Parents
from pgqueue.errors import ConfigurationError, PgQueueError

__all__ = ["build_parser", "load_app", "main"]


# The command modules, in the order `pgqueue --help` lists their commands.
GROUPS = (
    "worker",
    "status",
    "periodic",
    "jobs",
    "workflows",
    "queues",
    "limits",
    "doctor",
    "exporter",
    "dashboard",
)
# Each command, and the module that registers and runs it (a test checks this against what
# the modules register).
COMMANDS = {
    "worker": "worker",
    "migrate": "worker",
    "scheduler": "worker",
    "status": "status",
    "workers": "status",
    "periodic": "periodic",
    "jobs": "jobs",
    "workflows": "workflows",
    "queues": "queues",
    "limits": "limits",
    "doctor": "doctor",
    "exporter": "exporter",
    "dashboard": "dashboard",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with `command`, only of the commands its module registers.

    A command's module is imported only to register it: `pgqueue worker` then imports what
    the worker needs, not the dashboard, the doctor and the inspection queries as well. Its
    parser, help and errors are the same either way; the top-level help, which lists every
    command, is only ever printed by a parser built without `command`.
    """
    parents = Parents()
    parser = argparse.ArgumentParser(
        prog="pgqueue",
        description="pgqueue: a durable task queue whose only moving part is PostgreSQL.",
    )
    parser.add_argument("--version", action="version", version=f"pgqueue {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups = GROUPS if command is None else (COMMANDS[command],)
    for group in groups:
        importlib.import_module(f"pgqueue.cli.{group}").register(sub, parents)
    return parser


def _chosen_command(argv: Sequence[str]) -> str | None:
    """The command `argv` runs, when its first word is one; None otherwise (`-h`, `--version`,
    an unknown word: the parser of every command then prints the list or the error)."""
    if argv and argv[0] in COMMANDS:
        return argv[0]
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_chosen_command(arguments))
    args = parser.parse_args(arguments)
    log_format = getattr(args, "log_format", "text")
    if log_format not in _logging.LOG_FORMATS:  # from PGQUEUE_LOG_FORMAT: argparse lets it by
        print(
            f"pgqueue: error: log format {log_format!r} is not one of "
            f"{', '.join(_logging.LOG_FORMATS)} (PGQUEUE_LOG_FORMAT)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):  # PGQUEUE_LOG_LEVEL, as above
        print(
            f"pgqueue: error: log level {args.log_level!r} is not one of DEBUG, INFO, WARNING, "
            "ERROR (PGQUEUE_LOG_LEVEL)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if logging.root.handlers:  # configured already (pgqueue run from a host program)
        logging.root.setLevel(getattr(logging, args.log_level))
    else:
        _logging.configure(getattr(logging, args.log_level), sys.stderr, log_format)
    # Their INFO lines are about their own machinery, not about jobs.
    for noisy in ("alembic", "pgserver"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.root.level))
    # A worker logs two lines per job: skip what the format above never prints (the caller's
    # file and line, found by walking the stack; thread, process and task names).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    if hasattr(logging, "logAsyncioTasks"):
        logging.logAsyncioTasks = False
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # `pgqueue migrate --sql | head`: the reader left; that is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ConfigurationError as exc:
        print(f"pgqueue: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except PgQueueError as exc:
        print(f"pgqueue: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except psycopg.Error as exc:
        print(f"pgqueue: database error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
