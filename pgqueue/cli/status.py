"""`pgqueue status` (every queue and the fleet at a glance, once or redrawn with --watch) and
`pgqueue workers` (each live worker with what it runs, and the workers that left lately)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import psycopg

from pgqueue.app import App
from pgqueue.cli._common import Parents, connected, format_table, print_json
from pgqueue.cli._show import ago, as_json, duration, rate
from pgqueue.config import parse_duration
from pgqueue.errors import ConfigurationError, DatabaseUnavailable
from pgqueue.inspect import queues, workers

# Home the cursor and clear the screen, as `watch` and `top` do before each redraw.
CLEAR_SCREEN = "\x1b[H\x1b[2J"


def _status_document(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    report = queues.queue_status(conn)
    fleet = workers.fleet_summary(conn)
    return {
        "at": report.at,
        "queues": [as_json(queue) for queue in report.queues],
        "workers_alive": fleet.workers_alive,
        "workers_stale": fleet.workers_stale,
        "overdue_schedules": [as_json(s) for s in fleet.overdue_schedules],
    }


def _status_text(conn: psycopg.Connection[Any]) -> str:
    report = queues.queue_status(conn)
    fleet = workers.fleet_summary(conn)
    lines = []
    if report.queues:
        rows = [
            (
                q.name,
                "paused" if q.paused else "active",
                q.workers,
                q.ready,
                q.scheduled,
                q.running,
                duration(q.oldest_ready_age),
                f"{q.last_1m.succeeded}/{q.last_5m.succeeded}/{q.last_15m.succeeded}",
                f"{q.last_1m.failed}/{q.last_5m.failed}/{q.last_15m.failed}",
                rate(q.throughput),
                duration(q.wait_p50),
                duration(q.wait_p95),
            )
            for q in report.queues
        ]
        headers = (
            "queue",
            "state",
            "workers",
            "ready",
            "scheduled",
            "running",
            "oldest ready",
            "succeeded 1m/5m/15m",
            "failed 1m/5m/15m",
            "jobs/s",
            "wait p50",
            "wait p95",
        )
        lines.append(format_table(rows, headers, right=range(2, 12)))
    else:
        lines.append("(no queues: no jobs, no workers, nothing ended in the last 15 minutes)")
    lines.append("")
    alive = f"workers: {fleet.workers_alive} alive"
    if fleet.workers_stale:
        alive += f", {fleet.workers_stale} not responding (not yet declared lost)"
    lines.append(alive)
    if fleet.overdue_schedules:
        late = ", ".join(
            f"{s.name} ({s.task_name}) {duration(s.overdue_seconds)} late"
            for s in fleet.overdue_schedules
        )
        lines.append(f"schedules overdue: {late}")
    else:
        lines.append("schedules overdue: none")
    return "\n".join(lines)


class _Watcher:
    """Reads the status again and again on one connection, making a new one when it breaks:
    a watch survives a restart of the database and shows the error meanwhile."""

    def __init__(self, app: App, conn: psycopg.Connection[Any]) -> None:
        self.app = app
        self.conn: psycopg.Connection[Any] | None = conn

    def read(self, as_document: bool) -> tuple[Any, str | None]:
        """(the status, None), or (None, what went wrong) when the database is away."""
        try:
            if self.conn is None or self.conn.closed or self.conn.broken:
                self.conn = self.app.connect(autocommit=True)
            return (_status_document(self.conn) if as_document else _status_text(self.conn)), None
        except (psycopg.OperationalError, psycopg.InterfaceError, DatabaseUnavailable) as exc:
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return None, " ".join(str(exc).split()) or type(exc).__name__


def _watch(args: argparse.Namespace, interval: float) -> int:
    app, conn = connected(args)  # a database that is down at the start is one line, exit 1
    watcher = _Watcher(app, conn)
    try:
        while True:
            value, problem = watcher.read(args.json)
            if args.json:
                document = value if problem is None else {"error": problem}
                sys.stdout.write(json.dumps(as_json(document), separators=(",", ":")) + "\n")
            else:
                header = f"Every {duration(interval)}: pgqueue status"
                body = value if problem is None else f"database unavailable: {problem}"
                sys.stdout.write(f"{CLEAR_SCREEN}{header}\n\n{body}\n")
            sys.stdout.flush()
            time.sleep(interval)  # the redraw interval; Ctrl-C interrupts it
    except KeyboardInterrupt:
        return 0
    finally:
        if watcher.conn is not None:
            watcher.conn.close()


def cmd_status(args: argparse.Namespace) -> int:
    if args.watch is not None:
        interval = parse_duration(args.watch)
        if interval <= 0:
            raise ConfigurationError(f"--watch takes a number of seconds > 0, got {args.watch!r}")
        return _watch(args, interval)
    _, conn = connected(args)
    with conn:
        if args.json:
            print_json(_status_document(conn))
        else:
            print(_status_text(conn))
    return 0


def _workers_text(fleet: workers.Fleet) -> str:
    lines = []
    if fleet.workers:
        rows = [
            (
                w.name,
                w.hostname,
                w.pid,
                ",".join(w.queues),
                f"{len(w.running)}/{w.concurrency}",
                w.pool,
                ago(w.started_at, fleet.at),
                duration(w.heartbeat_age) + ("" if w.alive else " (not responding)"),
                w.version,
            )
            for w in fleet.workers
        ]
        headers = (
            "name",
            "host",
            "pid",
            "queues",
            "running",
            "pool",
            "started",
            "heartbeat",
            "version",
        )
        lines.append(format_table(rows, headers, right=(2, 4)))
        running = [
            (w.name, job.id, job.task_name, job.queue, duration(job.running_for))
            for w in fleet.workers
            for job in w.running
        ]
        if running:
            lines += ["", "running jobs:"]
            lines.append(
                format_table(running, ("worker", "job", "task", "queue", "for"), right=(1, 4))
            )
    else:
        lines.append("(no workers running)")
    if fleet.past:
        past = [
            (p.name, p.hostname, p.pid, p.ended_how, ago(p.ended_at, fleet.at), p.rescued)
            for p in fleet.past
        ]
        lines += ["", "workers that left lately:"]
        lines.append(
            format_table(past, ("name", "host", "pid", "ended", "when", "jobs rescued"), (2, 5))
        )
    return "\n".join(lines)


def cmd_workers(args: argparse.Namespace) -> int:
    if args.past < 0:
        raise ConfigurationError(f"--past takes a number >= 0, got {args.past}")
    _, conn = connected(args)
    with conn:
        fleet = workers.list_workers(conn, past_limit=args.past)
    if args.json:
        print_json(as_json(fleet))
    else:
        print(_workers_text(fleet))
    return 0


def register(sub: Any, parents: Parents) -> None:
    status = sub.add_parser(
        "status",
        parents=[parents.common, parents.app, parents.output],
        help="every queue and the fleet at a glance",
        description="Per queue: ready (due now), scheduled (due later) and running jobs, the "
        "age of the oldest ready job, paused or not, live workers serving it, jobs that "
        "succeeded and failed in the last 1, 5 and 15 minutes, jobs ended per second and the "
        "p50/p95 pickup wait over 5 minutes; then workers alive and periodic schedules "
        "overdue. With --watch the screen is redrawn every SECONDS until Ctrl-C (with --json: "
        "one JSON document per line per interval).",
    )
    status.add_argument(
        "--watch",
        metavar="SECONDS",
        help="redraw every SECONDS (e.g. 2, 0.5, 1m) until Ctrl-C",
    )
    status.set_defaults(func=cmd_status)

    workers_parser = sub.add_parser(
        "workers",
        parents=[parents.common, parents.app, parents.output],
        help="live workers, the jobs each runs, and workers that left lately",
        description="Each registered worker: name, host, pid, queues, running jobs against its "
        "concurrency, pool, when it started, the age of its last heartbeat and its pgqueue "
        "version; then the jobs each runs, and the workers that stopped or were lost lately.",
    )
    workers_parser.add_argument(
        "--past",
        type=int,
        default=10,
        metavar="N",
        help="how many of the workers that left lately to show (default: 10)",
    )
    workers_parser.set_defaults(func=cmd_workers)


__all__ = ["CLEAR_SCREEN", "cmd_status", "cmd_workers", "register"]
