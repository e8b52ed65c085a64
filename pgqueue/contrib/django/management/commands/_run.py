"""Running pgqueue's own command line from `manage.py`, on the project's App."""

from __future__ import annotations

import os
from collections.abc import Sequence

WORKER_APP = "pgqueue.contrib.django.worker:app"
# What Django's own command line handles before a command sees its arguments.
_DJANGO_OPTIONS = ("--settings", "--pythonpath")


def run_pgqueue(args: Sequence[str]) -> int:
    """`pgqueue <args>` with the project's App (an --app given on the line still wins)."""
    from pgqueue.cli import main

    saved = os.environ.get("PGQUEUE_APP")
    os.environ["PGQUEUE_APP"] = WORKER_APP
    try:
        return main(list(_without_django_options(args)))
    finally:
        if saved is None:
            os.environ.pop("PGQUEUE_APP", None)
        else:
            os.environ["PGQUEUE_APP"] = saved


def _without_django_options(args: Sequence[str]) -> list[str]:
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _DJANGO_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(option + "=" for option in _DJANGO_OPTIONS)):
            kept.append(arg)
    return kept
