"""`manage.py pgqueue_worker [options]`: `pgqueue worker` for this project."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ._run import run_pgqueue


class Command(BaseCommand):
    help = (
        "Run a pgqueue worker for this project's tasks (every installed app's tasks.py and "
        "the Django tasks of a PgQueueBackend); `manage.py pgqueue_worker --help` lists its "
        "options (--queues, --concurrency, ...)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("args", nargs=argparse.REMAINDER)

    def run_from_argv(self, argv: list[str]) -> None:
        sys.exit(run_pgqueue(["worker", *argv[2:]]))

    def handle(self, *args: str, **options: Any) -> None:
        code = run_pgqueue(["worker", *args])
        if code:
            raise CommandError(f"pgqueue worker exited with status {code}")
