"""The commands that change jobs and queues: `pgqueue jobs cancel | prune` and (to come) retry,
delete, and `pgqueue queues pause | resume`. Each is a thin shell over pgqueue.admin."""

from __future__ import annotations

import argparse
from typing import Any

from pgqueue.cli._common import EXIT_ERROR, Parents, app_or_dsn
from pgqueue.config import parse_duration
from pgqueue.errors import ConfigurationError


def cmd_prune(args: argparse.Namespace) -> int:
    from pgqueue.maintenance import FINISHED, prune_finished_jobs_sync
    from pgqueue.migrate import check_schema

    older_than = parse_duration(args.older_than)
    statuses = tuple(s.strip() for s in args.status.split(",") if s.strip())
    bad = [s for s in statuses if s not in FINISHED]
    if bad or not statuses:
        raise ConfigurationError(
            f"--status takes finished statuses ({', '.join(FINISHED)}), got {args.status!r}"
        )
    app = app_or_dsn(args)
    with app.connect(autocommit=True) as conn:
        check_schema(conn)
        deleted = prune_finished_jobs_sync(conn, older_than, statuses)
    print(f"deleted {deleted} job(s) finished more than {args.older_than} ago")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from pgqueue.errors import JobNotFound

    app = app_or_dsn(args)
    missing = 0
    for job_id in args.job_ids:
        try:
            done = app.cancel(job_id, args.reason)
            job = app.get_job(job_id)
        except JobNotFound:
            print(f"job {job_id}: no such job")
            missing += 1
            continue
        if not done:
            print(f"job {job_id}: already finished ({job.status.value}), nothing to cancel")
        elif job.status.value == "running":
            print(f"job {job_id}: cancellation requested from its worker")
        else:
            print(f"job {job_id}: cancelled")
    return EXIT_ERROR if missing else 0


def register_job_actions(sub: Any, parents: Parents) -> None:
    """`pgqueue jobs prune | cancel` (and the other actions on jobs)."""
    prune = sub.add_parser(
        "prune",
        parents=[parents.common, parents.app],
        help="delete old finished jobs",
        description="Delete finished jobs older than --older-than, in batches. Workers also "
        "do this on their own (see `pgqueue worker --retention`).",
    )
    prune.add_argument(
        "--older-than", default="7d", help="age of the finished jobs to delete (default: 7d)"
    )
    prune.add_argument(
        "--status",
        default="succeeded,failed,cancelled",
        help="which finished statuses to delete (default: succeeded,failed,cancelled)",
    )
    prune.set_defaults(func=cmd_prune)

    cancel = sub.add_parser(
        "cancel",
        parents=[parents.common, parents.app],
        help="cancel jobs by id",
        description="A queued job ends CANCELLED at once; a running job's worker is told to "
        "cancel it (async tasks are cancelled, sync tasks see the request in their context).",
    )
    cancel.add_argument("job_ids", type=int, nargs="+", metavar="JOB_ID")
    cancel.add_argument("--reason", default="cancelled on request", help="stored as the error")
    cancel.set_defaults(func=cmd_cancel)


def register_queue_actions(sub: Any, parents: Parents) -> None:
    """`pgqueue queues pause | resume NAME`."""
