"""`pgqueue worker | migrate | stats`: a thin shell over the package.

Errors a user can meet (bad DSN, unreachable database, unmigrated schema, bad options) end
with one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import psycopg

from pgqueue import __version__, _logging
from pgqueue.app import App
from pgqueue.config import WorkerSettings, parse_duration, parse_queues
from pgqueue.errors import ConfigurationError, PgQueueError

EXIT_ERROR = 1
EXIT_USAGE = 2


def load_app(path: str | None) -> App:
    """Import `module:attribute` (default attribute `app`) and check it is a pgqueue App."""
    path = path or os.environ.get("PGQUEUE_APP")
    if not path:
        raise ConfigurationError(
            "no app given: pass --app module:attribute (e.g. --app myproject.tasks:app) "
            "or set PGQUEUE_APP"
        )
    module_name, _, attribute = path.partition(":")
    attribute = attribute or "app"
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r} for --app {path}: {exc}") from exc
    except Exception as exc:
        raise ConfigurationError(
            f"importing {module_name!r} for --app {path} raised {type(exc).__name__}: {exc} "
            f"(run `python -c 'import {module_name}'` for the traceback)"
        ) from exc
    if not hasattr(module, attribute):
        raise ConfigurationError(
            f"--app {path}: module {module_name!r} has no attribute {attribute!r}"
        )
    app = getattr(module, attribute)
    if not isinstance(app, App):
        raise ConfigurationError(
            f"--app {path}: {module_name}.{attribute} is {type(app).__name__}, not a pgqueue.App"
        )
    return app


def _app_or_dsn(args: argparse.Namespace) -> App:
    app = load_app(args.app) if (args.app or os.environ.get("PGQUEUE_APP")) else App()
    if args.dsn:
        app.set_dsn(args.dsn)
    return app


def cmd_worker(args: argparse.Namespace) -> int:
    from pgqueue.worker import Worker

    app = load_app(args.app)
    if args.dsn:
        app.set_dsn(args.dsn)
    settings = WorkerSettings(
        queues=parse_queues(args.queues),
        concurrency=args.concurrency,
        shutdown_timeout=args.shutdown_timeout,
        poll_interval=args.poll_interval,
        heartbeat_timeout=args.heartbeat_timeout,
        name=args.name,
        run_scheduler=not args.no_scheduler,
        pool=args.pool,
        app_path=args.app or os.environ.get("PGQUEUE_APP"),
        retention=parse_duration(args.retention),
    )
    worker = Worker(app, settings)
    code = worker.run()
    stuck = worker.stuck_threads()
    if stuck:
        # Python cannot stop a thread; exit without joining the ones still in a task.
        logging.getLogger("pgqueue.worker").warning(
            "exiting with %d sync task thread(s) still running", len(stuck)
        )
        atexit._run_exitfuncs()
        logging.shutdown()
        os._exit(code)
    return code


def cmd_migrate(args: argparse.Namespace) -> int:
    from pgqueue import migrate

    if args.sql:
        if args.downgrade:
            print(migrate.downgrade_sql(migrate.head_revision(), args.downgrade))
        else:
            print(migrate.upgrade_sql(args.revision))
        return 0
    app = _app_or_dsn(args)
    dsn = app.dsn
    app._connect_kwargs()  # validates the DSN with a one-line error
    with app.connect():
        pass  # a clear error now beats a traceback from inside alembic
    if args.downgrade:
        migrate.downgrade(dsn, args.downgrade)
        print(f"pgqueue schema downgraded to {args.downgrade}")
    else:
        migrate.upgrade(dsn, args.revision)
        target = migrate.head_revision() if args.revision == "head" else args.revision
        print(f"pgqueue schema at revision {target}")
    return 0


def cmd_scheduler(args: argparse.Namespace) -> int:
    import signal
    import threading

    from pgqueue.migrate import check_schema
    from pgqueue.periodic import Scheduler

    app = load_app(args.app)
    if args.dsn:
        app.set_dsn(args.dsn)
    with app.connect(autocommit=True) as conn:
        check_schema(conn)
    scheduler = Scheduler(app)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    scheduler.start()
    logging.getLogger("pgqueue.scheduler").info(
        "scheduler running for %d declared schedule(s)", len(app.schedules)
    )
    stop.wait()
    scheduler.stop()
    scheduler.join(5)
    logging.getLogger("pgqueue.scheduler").info("scheduler stopped")
    return 0


def _connected(args: argparse.Namespace) -> tuple[App, psycopg.Connection[Any]]:
    from pgqueue.migrate import check_schema

    app = _app_or_dsn(args)
    conn = app.connect(autocommit=True)
    check_schema(conn)
    return app, conn


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S%z") if value is not None else "-"


def cmd_periodic_list(args: argparse.Namespace) -> int:
    from pgqueue.periodic import list_schedules
    from pgqueue.schedule import Schedule

    _, conn = _connected(args)
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
        state = "enabled" if row["enabled"] else "disabled"
        if row["source"] == "code" and not row["declared"]:
            state = "removed"
        elif row["enabled"] and row["overdue"]:
            state = "overdue"  # no running scheduler knows its task, or none runs at all
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
        next_fire = _when(row["next_fire_at"]) if state in ("enabled", "overdue") else "-"
        print(
            f"{row['name']:<36} {row['task_name']:<28} {spec:<30} {state:<10} "
            f"{_when(row['last_fire_at']):<25} {last_job:<18} {next_fire}"
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
    app, conn = _connected(args)
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

    app, conn = _connected(args)
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
    app = _app_or_dsn(args)
    with app.connect(autocommit=True) as conn:
        check_schema(conn)
        deleted = prune_finished_jobs_sync(conn, older_than, statuses)
    print(f"deleted {deleted} job(s) finished more than {args.older_than} ago")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from pgqueue.errors import JobNotFound

    app = _app_or_dsn(args)
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


def cmd_stats(args: argparse.Namespace) -> int:
    from pgqueue import queries
    from pgqueue.migrate import check_schema

    app = _app_or_dsn(args)
    with app.connect(autocommit=True) as conn:
        check_schema(conn)
        rows = conn.execute(queries.QUEUE_STATS).fetchall()
    print(f"{'queue':<24} {'status':<10} {'jobs':>10}  oldest due")
    for queue, status, count, oldest in rows:
        print(f"{queue:<24} {status:<10} {count:>10}  {oldest.isoformat() if oldest else ''}")
    if not rows:
        print("(no jobs)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dsn",
        help="PostgreSQL DSN or URL (default: $PGQUEUE_DSN, then $DATABASE_URL, then the "
        "embedded development database)",
    )
    common.add_argument(
        "--log-level",
        default=os.environ.get("PGQUEUE_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default: INFO)",
    )
    app_arg = argparse.ArgumentParser(add_help=False)
    app_arg.add_argument(
        "--app", help="the App to load, as module:attribute (default: $PGQUEUE_APP)"
    )

    parser = argparse.ArgumentParser(
        prog="pgqueue",
        description="pgqueue: a durable task queue whose only moving part is PostgreSQL.",
    )
    parser.add_argument("--version", action="version", version=f"pgqueue {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = sub.add_parser(
        "worker",
        parents=[common, app_arg],
        help="run a worker process",
        description="Claim and run jobs until SIGTERM/SIGINT (warm shutdown; a second signal "
        "stops at once, and interrupted jobs go back to the queue).",
    )
    worker.add_argument(
        "--queues",
        "-Q",
        help="comma-separated queues to serve (default: every queue the app's tasks use)",
    )
    worker.add_argument(
        "--concurrency",
        "-c",
        type=int,
        default=10,
        help="jobs run at once: threads for sync tasks, slots for async ones (default: 10)",
    )
    worker.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        help="seconds running jobs get to finish after the first signal (default: 30)",
    )
    worker.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        help="seconds between polls when no NOTIFY arrives; a fallback only (default: 1)",
    )
    worker.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=WorkerSettings.heartbeat_timeout,
        help="seconds without a heartbeat after which this worker declares any worker lost "
        "and rescues its jobs, even if its session still holds its lock (a frozen or cut-off "
        "worker); must be more than twice the 1 s heartbeat interval (default: %(default)g)",
    )
    worker.add_argument(
        "--name", help="worker name in logs and pgqueue_workers (default: host:pid)"
    )
    worker.add_argument(
        "--pool",
        choices=["thread", "process"],
        default="thread",
        help="where sync tasks run: 'thread' (default), or 'process': child processes for "
        "CPU-bound tasks, whose timeouts terminate the process (async tasks always run on "
        "the worker's event loop)",
    )
    worker.add_argument(
        "--retention",
        default="7d",
        help="delete finished jobs (succeeded, failed, cancelled) older than this, e.g. 7d, "
        "12h, 3600; 0 keeps them forever (default: 7d)",
    )
    worker.add_argument(
        "--no-scheduler",
        action="store_true",
        help="do not run the periodic scheduler in this worker (by default every worker "
        "does; each tick still makes exactly one job)",
    )
    worker.set_defaults(func=cmd_worker)

    migrate = sub.add_parser(
        "migrate",
        parents=[common, app_arg],
        help="create or upgrade pgqueue's tables",
        description="Upgrade pgqueue's schema to the latest revision (alembic, version table "
        "pgqueue_alembic_version), or print the SQL for a DBA to apply.",
    )
    migrate.add_argument("--sql", action="store_true", help="print the SQL instead of running it")
    migrate.add_argument("--revision", default="head", help="target revision (default: head)")
    migrate.add_argument(
        "--downgrade",
        metavar="REVISION",
        help="downgrade to REVISION instead ('base' removes pgqueue's tables)",
    )
    migrate.set_defaults(func=cmd_migrate)

    scheduler = sub.add_parser(
        "scheduler",
        parents=[common, app_arg],
        help="run only the periodic scheduler",
        description="Sync the app's periodic schedules and make their jobs, without running "
        "jobs. Any number may run beside workers: each tick still makes exactly one job.",
    )
    scheduler.set_defaults(func=cmd_scheduler)

    periodic = sub.add_parser(
        "periodic",
        help="list and manage periodic schedules at run time",
        description="Inspect and manage the schedules stored in pgqueue_periodic.",
    )
    psub = periodic.add_subparsers(dest="action", required=True, metavar="ACTION")
    plist = psub.add_parser(
        "list",
        parents=[common, app_arg],
        help="every schedule: last fire, last job status, next fire",
    )
    plist.set_defaults(func=cmd_periodic_list)
    padd = psub.add_parser("add", parents=[common, app_arg], help="add a schedule at run time")
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
        p = psub.add_parser(action, parents=[common, app_arg], help=text)
        p.add_argument("name", help="the schedule name (see `pgqueue periodic list`)")
        if action == "remove":
            p.add_argument(
                "--force",
                action="store_true",
                help="delete a schedule declared in code too (it comes back at the next start "
                "of an app that still declares it): for a schedule whose task is gone",
            )
        p.set_defaults(func=cmd_periodic_action)

    prune = sub.add_parser(
        "prune",
        parents=[common, app_arg],
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
        parents=[common, app_arg],
        help="cancel jobs by id",
        description="A queued job ends CANCELLED at once; a running job's worker is told to "
        "cancel it (async tasks are cancelled, sync tasks see the request in their context).",
    )
    cancel.add_argument("job_ids", type=int, nargs="+", metavar="JOB_ID")
    cancel.add_argument("--reason", default="cancelled on request", help="stored as the error")
    cancel.set_defaults(func=cmd_cancel)

    stats = sub.add_parser(
        "stats",
        parents=[common, app_arg],
        help="jobs per queue and status",
    )
    stats.set_defaults(func=cmd_stats)
    return parser


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if logging.root.handlers:  # configured already (pgqueue run from a host program)
        logging.root.setLevel(getattr(logging, args.log_level))
    else:
        _logging.configure(getattr(logging, args.log_level), sys.stderr)
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
