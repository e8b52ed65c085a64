"""`pgqueue stats` (to be replaced by `pgqueue status`) and `pgqueue queues`: the queues, paused
or not; pausing and resuming are registered from pgqueue.cli.actions."""

from __future__ import annotations

import argparse
from typing import Any

from pgqueue.cli import actions
from pgqueue.cli._common import Parents, app_or_dsn


def cmd_stats(args: argparse.Namespace) -> int:
    from pgqueue import queries
    from pgqueue.migrate import check_schema

    app = app_or_dsn(args)
    with app.connect(autocommit=True) as conn:
        check_schema(conn)
        rows = conn.execute(queries.QUEUE_STATS).fetchall()
    print(f"{'queue':<24} {'status':<10} {'jobs':>10}  oldest due")
    for queue, status, count, oldest in rows:
        print(f"{queue:<24} {status:<10} {count:>10}  {oldest.isoformat() if oldest else ''}")
    if not rows:
        print("(no jobs)")
    return 0


def register(sub: Any, parents: Parents) -> None:
    stats = sub.add_parser(
        "stats",
        parents=[parents.common, parents.app],
        help="jobs per queue and status",
    )
    stats.set_defaults(func=cmd_stats)

    queues = sub.add_parser(
        "queues",
        help="list queues; pause and resume them fleet-wide",
        description="Every queue, paused or not. `pgqueue queues pause NAME` stops every worker "
        "starting jobs of NAME until `pgqueue queues resume NAME`.",
    )
    qsub = queues.add_subparsers(dest="action", required=False, metavar="ACTION")
    actions.register_queue_actions(qsub, parents)
