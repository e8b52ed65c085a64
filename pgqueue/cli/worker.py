"""`pgqueue worker`, `pgqueue migrate` and `pgqueue scheduler`: running the fleet and its schema."""

from __future__ import annotations

import argparse
import atexit
import logging
import os
from typing import Any

from pgqueue.cli._common import Parents, app_or_dsn, load_app, tcp_port
from pgqueue.config import WorkerSettings, parse_duration, parse_queues


def cmd_worker(args: argparse.Namespace) -> int:
    from pgqueue.worker import Worker

    app = load_app(args.app)
    if args.dsn:
        app.set_dsn(args.dsn)
    if args.listen_dsn:
        app.set_listen_dsn(args.listen_dsn)
    settings = WorkerSettings(
        queues=parse_queues(args.queues),
        concurrency=args.concurrency,
        shutdown_timeout=args.shutdown_timeout,
        poll_interval=args.poll_interval,
        progress_interval=args.progress_interval,
        heartbeat_timeout=args.heartbeat_timeout,
        name=args.name,
        run_scheduler=not args.no_scheduler,
        pool=args.pool,
        app_path=args.app or os.environ.get("PGQUEUE_APP"),
        retention=parse_duration(args.retention),
    )
    worker = Worker(app, settings)
    server = None
    if args.metrics_port is not None:
        from pgqueue import metrics  # needs the `metrics` extra: a one-line error without it

        # Bound before anything else starts: a taken port stops the worker at once.
        server = metrics.serve(
            metrics.worker_registry(worker), args.metrics_host, args.metrics_port
        )
        logging.getLogger("pgqueue.worker").info(
            "serving metrics on http://%s:%d/metrics", args.metrics_host, server.port
        )
    try:
        code = worker.run()
    finally:
        if server is not None:
            server.close()
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
    app = app_or_dsn(args)
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

    from pgqueue.periodic import Scheduler
    from pgqueue.revisions import check_schema

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


def register(sub: Any, parents: Parents) -> None:
    worker = sub.add_parser(
        "worker",
        parents=[parents.common, parents.app],
        help="run a worker process",
        description="Claim and run jobs until SIGTERM/SIGINT (warm shutdown; a second signal "
        "stops at once, and interrupted jobs go back to the queue).",
    )
    worker.add_argument(
        "--listen-dsn",
        metavar="DSN",
        help="a direct (or session-pooled) DSN for the worker's LISTEN, lock and heartbeat "
        "when --dsn goes through a pooler in transaction mode (default: PGQUEUE_LISTEN_DSN, "
        "else --dsn); see docs/operations.md",
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
        "--progress-interval",
        type=float,
        default=WorkerSettings.progress_interval,
        help="seconds between writes of a job's progress (set_progress): a task may publish "
        "it as often as it likes, the latest value is written at most this often "
        "(default: %(default)g)",
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
    worker.add_argument(
        "--metrics-port",
        type=tcp_port,
        metavar="PORT",
        help="serve this worker's Prometheus metrics on PORT at /metrics (needs the "
        "pgqueue[metrics] extra); off by default",
    )
    worker.add_argument(
        "--metrics-host",
        default="0.0.0.0",
        metavar="HOST",
        help="address the metrics endpoint listens on (default: 0.0.0.0, every interface, so "
        "that Prometheus on another host or container can scrape it; 127.0.0.1 keeps it local)",
    )
    worker.set_defaults(func=cmd_worker)

    migrate = sub.add_parser(
        "migrate",
        parents=[parents.common, parents.app],
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
        parents=[parents.common, parents.app],
        help="run only the periodic scheduler",
        description="Sync the app's periodic schedules and make their jobs, without running "
        "jobs. Any number may run beside workers: each tick still makes exactly one job.",
    )
    scheduler.set_defaults(func=cmd_scheduler)
