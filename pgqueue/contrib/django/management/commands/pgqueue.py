"""`manage.py pgqueue <command> ...`: every `pgqueue` command on the project's database."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ._run import run_pgqueue


class Command(BaseCommand):
    help = (
        "Run a pgqueue command (worker, status, jobs, queues, workers, periodic, doctor, "
        "migrate, ...) on this project's database: `manage.py pgqueue --help` lists them."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("args", nargs=argparse.REMAINDER)

    def run_from_argv(self, argv: list[str]) -> None:
        # pgqueue parses its own arguments (and prints its own --help).
        sys.exit(run_pgqueue(argv[2:]))

    def handle(self, *args: str, **options: Any) -> None:
        code = run_pgqueue(args)
        if code:
            raise CommandError(f"pgqueue {' '.join(args)} exited with status {code}")
