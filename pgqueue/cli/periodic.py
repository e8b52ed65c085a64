"""`pgqueue periodic`: list and manage periodic schedules at run time."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from pgqueue.cli._common import Parents, connected, when
from pgqueue.errors import ConfigurationError


def cmd_periodic_list(args: argparse.Namespace) -> int:
    from pgqueue.periodic import list_schedules, schedule_state
    from pgqueue.schedule import Schedule

    _, conn = connected(args)
    with conn:
        rows = list_schedules(conn)
    if not rows:
        print("(no periodic schedules)")
        return 0
    print(
        f"{'name':<36} {'task':<28} {'schedule':<30} {'state':<10} "
        f"{'last fire':<25} {'last job':<18} next fire"
    )
    for row in rows:
        state = schedule_state(row)
        try:
            spec = Schedule.from_row(row).spec
        except Exception:  # stored by an older pgqueue or by hand: list it all the same
            spec = f"cron '{row['cron']}'" if row["cron"] else f"every {row['every_seconds']}s"
            state = "invalid"
        last_job = (
            f"{row['last_job_id']} {row['last_job_status'] or 'pruned'}"
            if row["last_job_id"]
            else "-"
        )
        next_fire = when(row["next_fire_at"]) if state in ("enabled", "overdue") else "-"
        print(
            f"{row['name']:<36} {row['task_name']:<28} {spec:<30} {state:<10} "
            f"{when(row['last_fire_at']):<25} {last_job:<18} {next_fire}"
        )
    return 0


def cmd_periodic_add(args: argparse.Namespace) -> int:
    import json

    from pgqueue.periodic import add_schedule
    from pgqueue.schedule import Schedule

    try:
        call_args = json.loads(args.args)
        call_kwargs = json.loads(args.kwargs)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"--args/--kwargs must be JSON: {exc}") from None
    if not isinstance(call_args, list) or not isinstance(call_kwargs, dict):
        raise ConfigurationError("--args takes a JSON list and --kwargs a JSON object")
    schedule = Schedule(
        name=args.name,
        task_name=args.task,
        cron=args.cron,
        every=args.every,
        tz=args.tz,
        args=tuple(call_args),
        kwargs=call_kwargs,
        queue=args.queue,
        priority=args.priority,
        catch_up=args.catch_up,
        max_catch_up=args.max_catch_up,
    )
    app, conn = connected(args)
    with conn:
        add_schedule(conn, schedule)
    print(f"added periodic schedule {schedule.name!r}: {schedule.task_name}, {schedule.spec}")
    if (args.app or os.environ.get("PGQUEUE_APP")) and schedule.task_name not in app.tasks:
        # Not refused: the schedule may be meant for another service's workers.
        print(
            f"pgqueue: warning: the app does not register task {schedule.task_name!r}: the "
            "schedule fires only where a worker's or scheduler's app registers it",
            file=sys.stderr,
        )
    return 0


def cmd_periodic_action(args: argparse.Namespace) -> int:
    from pgqueue import periodic

    app, conn = connected(args)
    with conn:
        if args.action == "remove":
            periodic.remove_schedule(conn, args.name, force=args.force)
            print(f"removed periodic schedule {args.name!r}")
        elif args.action in ("enable", "disable"):
            periodic.set_enabled(conn, args.name, args.action == "enable")
            print(f"{args.action}d periodic schedule {args.name!r}")
        else:
            job_id = periodic.run_now(conn, app, args.name)
            print(f"enqueued job {job_id} for periodic schedule {args.name!r}")
    return 0


def register(sub: Any, parents: Parents) -> None:
    periodic = sub.add_parser(
        "periodic",
        help="list and manage periodic schedules at run time",
        description="Inspect and manage the schedules stored in pgqueue_periodic.",
    )
    psub = periodic.add_subparsers(dest="action", required=True, metavar="ACTION")
    plist = psub.add_parser(
        "list",
        parents=[parents.common, parents.app],
        help="every schedule: last fire, last job status, next fire",
    )
    plist.set_defaults(func=cmd_periodic_list)
    padd = psub.add_parser(
        "add", parents=[parents.common, parents.app], help="add a schedule at run time"
    )
    padd.add_argument("name", help="a unique schedule name")
    padd.add_argument("--task", required=True, help="the task name to enqueue")
    kind = padd.add_mutually_exclusive_group(required=True)
    kind.add_argument("--cron", help="5-field cron expression, e.g. '*/5 * * * *'")
    kind.add_argument("--every", type=float, help="interval in seconds")
    padd.add_argument("--tz", default="UTC", help="time zone of --cron (default: UTC)")
    padd.add_argument("--args", default="[]", help="JSON list of positional arguments")
    padd.add_argument("--kwargs", default="{}", help="JSON object of keyword arguments")
    padd.add_argument("--queue", help="queue (default: the task's)")
    padd.add_argument("--priority", type=int, help="priority (default: the task's)")
    padd.add_argument(
        "--catch-up",
        default="latest",
        choices=["skip", "latest", "all"],
        help="what to do with ticks missed while no scheduler ran (default: latest)",
    )
    padd.add_argument("--max-catch-up", type=int, default=100, help="bound for --catch-up all")
    padd.set_defaults(func=cmd_periodic_add)
    for action, text in (
        ("remove", "delete a run-time schedule"),
        ("enable", "let a schedule fire again"),
        ("disable", "stop a schedule firing (kept, with its history)"),
        ("run-now", "enqueue the schedule's job now, outside its ticks (needs --app)"),
    ):
        p = psub.add_parser(action, parents=[parents.common, parents.app], help=text)
        p.add_argument("name", help="the schedule name (see `pgqueue periodic list`)")
        if action == "remove":
            p.add_argument(
                "--force",
                action="store_true",
                help="delete a schedule declared in code too (it comes back at the next start "
                "of an app that still declares it): for a schedule whose task is gone",
            )
        p.set_defaults(func=cmd_periodic_action)
