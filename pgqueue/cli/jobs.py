"""`pgqueue jobs`: list and show jobs; the actions on them (retry, cancel, delete, prune) are
registered from pgqueue.cli.actions."""

from __future__ import annotations

from typing import Any

from pgqueue.cli import actions
from pgqueue.cli._common import Parents


def register_views(sub: Any, parents: Parents) -> None:
    """`pgqueue jobs list | show`."""


def register(sub: Any, parents: Parents) -> None:
    jobs = sub.add_parser(
        "jobs",
        help="list, show, retry, cancel and delete jobs",
        description="Jobs, queued, running and finished, by id or by filter.",
    )
    jsub = jobs.add_subparsers(dest="action", required=True, metavar="ACTION")
    register_views(jsub, parents)
    actions.register_job_actions(jsub, parents)
