"""`pgqueue worker`, `pgqueue migrate` and `pgqueue scheduler`: running the fleet and its schema."""

from __future__ import annotations

import argparse
import atexit
import logging
import os
from typing import TYPE_CHECKING, Any

from pgqueue import _logging
from pgqueue.cli._common import Parents, app_or_dsn, load_app, tcp_port
from pgqueue.config import WorkerSettings, parse_duration, parse_queues
from pgqueue.errors import ConfigurationError
from pgqueue.presence import default_name
from pgqueue.supervisor import MAX_PROCESSES, SUPERVISOR_FD_ENV, Supervisor, watch_supervisor

if TYPE_CHECKING:
    from pgqueue.worker import Worker


def cmd_worker(args: argparse.Namespace) -> int:
    if args.processes != 1:
        return _supervise(args)
    supervisor_fd = os.environ.pop(SUPERVISOR_FD_ENV, None)
    if supervisor_fd is not None:  # a child of `--processes N`, writing to a shared stream
        _logging.tag_lines(args.name or default_name())
    worker = _worker(args)
    if supervisor_fd is not None:  # stop if the supervisor dies
        watch_supervisor(int(supervisor_fd), lambda: worker.stopping)
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


def _worker(args: argparse.Namespace) -> Worker:
    """The Worker the options describe; loading the app and checking the options on the way."""
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
        claim_ahead=args.claim_ahead,
        heartbeat_timeout=args.heartbeat_timeout,
        name=args.name,
        run_scheduler=not args.no_scheduler,
        pool=args.pool,
        app_path=args.app or os.environ.get("PGQUEUE_APP"),
        retention=parse_duration(args.retention),
    )
    return Worker(app, settings)


def _supervise(args: argparse.Namespace) -> int:
    """`--processes N`: N children running this command without --processes."""
    count = args.processes
    if not 1 <= count <= MAX_PROCESSES:
        raise ConfigurationError(f"--processes must be 1 to {MAX_PROCESSES}, got {count}")
    port = args.metrics_port
    if port and port + count - 1 > 65535:
        raise ConfigurationError(
            f"--metrics-port {port} with --processes {count} needs ports up to "
            f"{port + count - 1}, past 65535: choose a lower port"
        )
    if port is not None:
        from pgqueue import metrics  # noqa: F401  # the extra is there, or one line now
    # What a single worker refuses at its start (a bad --app, DSN, option, an unreachable or
    # unmigrated database) is refused here, once, with its own line, rather than by N children
    # that the supervisor would then have to give up on. The check's connections are closed
    # before any child starts: the supervisor holds none while it runs.
    _worker(args).preflight()
    commands = [_child_argv(args, number) for number in range(1, count + 1)]
    return Supervisor(commands).run()


def _child_argv(args: argparse.Namespace, number: int) -> list[str]:
    """The worker command of child `number`: every option as parsed, without --processes; the
    name gets `-number`, the metrics port `number - 1` more. Rebuilt from the parsed options
    rather than copied from sys.argv, so that abbreviations and `--opt=value` need no care."""
    argv = ["worker"]
    for action in args.worker_parser._actions:
        value = getattr(args, action.dest, None)
        if not action.option_strings or action.dest == "processes":
            continue
        if value is None or value is False:  # not given, or a flag not set
            continue
        option = next(o for o in action.option_strings if o.startswith("--"))
        if action.nargs == 0:  # a flag: --no-scheduler
            argv.append(option)
            continue
        if action.dest == "name":
            value = f"{value}-{number}"
        elif action.dest == "metrics_port" and value:  # port 0 stays "any free port"
            value += number - 1
        argv.append(f"{option}={value}")
    return argv


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
        "stops at once, and interrupted jobs go back to the queue). With --processes N, "
        "supervise N such worker processes, to use N cores.",
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
        default=None,
        help="jobs run at once: threads for sync tasks, slots for async ones (default: 100 "
        "when all the app's tasks are async and none transactional, else 10)",
    )
    worker.add_argument(
        "--claim-ahead",
        type=int,
        default=WorkerSettings.claim_ahead,
        metavar="N",
        help="for jobs that end within milliseconds, hold up to N claimed jobs per slot "
        "beyond the free slots, so that a slot that frees takes its next job without a round "
        "trip: at most what the slots get through in 50 ms, each given back after 0.5 s if "
        "still held. 0 claims for free slots only: every claimed job is running, at the cost "
        "of a round trip between jobs (default: %(default)d; the nearest thing to Celery's "
        "prefetch multiplier, where 0 lifts the limit instead)",
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
        help="seconds between polls when no NOTIFY arrives; a fallback only (default: 1; "
        "more than 4 workers serving a queue share their polls: each polls every fleet/4 "
        "intervals)",
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
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="run N worker processes under one supervisor, to use N cores: each is a whole "
        "worker with these options (--name X becomes X-1..X-N, --metrics-port P becomes "
        "P..P+N-1), holding its own connections; signals go to all of them, and one that "
        "dies is started again (default: 1, this process is the worker); see docs/guide.md",
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
    # The parser itself: a supervisor rebuilds its children's command line from its options.
    worker.set_defaults(func=cmd_worker, worker_parser=worker)

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
