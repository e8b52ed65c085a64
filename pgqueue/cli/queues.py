"""`pgqueue queues`: every queue, paused or not, with its depth and live workers; pausing and
resuming are registered from pgqueue.cli.actions."""

from __future__ import annotations

import argparse
from typing import Any

from pgqueue.cli import actions
from pgqueue.cli._common import Parents, connected, format_table, print_json, when
from pgqueue.cli._show import as_json, duration


def cmd_queues(args: argparse.Namespace) -> int:
    from pgqueue.inspect import queues

    _, conn = connected(args)
    with conn:
        report = queues.queue_status(conn)
    if args.json:
        print_json(
            [
                {
                    key: value
                    for key, value in as_json(queue).items()
                    if key
                    in (
                        "name",
                        "paused",
                        "paused_at",
                        "paused_by",
                        "ready",
                        "scheduled",
                        "running",
                        "waiting",
                        "oldest_ready_age",
                        "workers",
                    )
                }
                for queue in report.queues
            ]
        )
        return 0
    if not report.queues:
        print("(no queues: no jobs, no workers, nothing ended in the last 15 minutes)")
        return 0
    rows = [
        (
            q.name,
            "paused" if q.paused else "active",
            when(q.paused_at) if q.paused else "",
            q.paused_by if q.paused else "",
            q.workers,
            q.ready,
            q.scheduled,
            q.running,
            q.waiting,
            duration(q.oldest_ready_age),
        )
        for q in report.queues
    ]
    headers = (
        "queue",
        "state",
        "paused since",
        "paused by",
        "workers",
        "ready",
        "scheduled",
        "running",
        "waiting",
        "oldest ready",
    )
    print(format_table(rows, headers, right=range(4, 10)))
    return 0


def register(sub: Any, parents: Parents) -> None:
    queues = sub.add_parser(
        "queues",
        parents=[parents.common, parents.app, parents.output],
        help="list queues; pause and resume them fleet-wide",
        description="Without an action: every queue (with jobs, paused, or served by a live "
        "worker), paused or not, with its live workers and its ready, scheduled, running and "
        "waiting (workflow steps) jobs. `pgqueue queues pause NAME` stops every worker "
        "starting jobs of NAME until `pgqueue queues resume NAME`.",
    )
    queues.set_defaults(func=cmd_queues)
    qsub = queues.add_subparsers(dest="action", required=False, metavar="ACTION")
    # The group's parser takes --dsn, --app and --json itself (for the list): the actions'
    # options must not overwrite those given before the action with their defaults.
    actions.register_queue_actions(qsub, Parents(suppress_defaults=True))
