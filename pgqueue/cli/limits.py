"""`pgqueue limits`: the fleet-wide limits of tasks, and what each holds now."""

from __future__ import annotations

import argparse
from typing import Any

from pgqueue.cli._common import Parents, connected, format_table, print_json
from pgqueue.limits import PERIODS


def cmd_limits(args: argparse.Namespace) -> int:
    from pgqueue.limits import list_limits

    _, conn = connected(args)
    with conn:
        rows = list_limits(conn)
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("(no task declares a limit; limits are written when a worker starts)")
        return 0
    units = {seconds: unit for unit, seconds in PERIODS.items()}
    table = []
    for row in rows:
        rate = f"{row['rate']}/{units[row['per_seconds']]}" if row["rate"] is not None else None
        started = row["started_in_period"] if row["rate"] is not None else None
        table.append(
            (
                row["name"],
                rate,
                started,
                row["concurrency"],
                row["key_concurrency"],
                row["running"],
                row["queued"],
            )
        )
    headers = ("task", "rate", "started in period", "concurrency", "per key", "running", "queued")
    print(format_table(table, headers, right=range(2, 7)))
    return 0


def register(sub: Any, parents: Parents) -> None:
    limits = sub.add_parser(
        "limits",
        parents=[parents.common, parents.app, parents.output],
        help="tasks' fleet-wide limits: rate, concurrency, per key; what each holds now",
        description=(
            "Every limit the tasks declare (written to pgqueue_limits when a worker starts): "
            "its rate and the jobs it started in the current period, its concurrency and per-key "
            "concurrency, and the task's running and queued jobs it limits."
        ),
    )
    limits.set_defaults(func=cmd_limits)
