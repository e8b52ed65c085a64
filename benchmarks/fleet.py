"""A fleet of worker processes against one PostgreSQL: `make bench-fleet`.

50 worker processes (`pgqueue worker --processes 50`, default settings otherwise) drain
100,000 queued no-op jobs from one PostgreSQL server whose `max_connections` is 100. Each
worker holds two connections: its listening one (LISTEN, presence lock, heartbeat, the
periodic scheduler), which must be direct, and its shared one (claims, outcomes, progress,
maintenance), which goes through a PgBouncer in transaction mode (`--pool-size` server
connections): 50 direct plus the pool, well under the server's limit.

It reports:
- the drain: jobs/s from the first start to the last finish, and that every job ended
  SUCCEEDED exactly once (nothing lost, nothing run twice);
- the server connections, sampled every 0.5 s: before, during (peak) and after;
- the database's CPU while the fleet is idle (all PostgreSQL processes of the machine, from
  /proc, as a share of one core), and the fleet's own;
- the thundering herd: how many claim statements one enqueue causes while the 50 workers
  idle and listen, from the workers' own metrics (`pgqueue_claims`), less the claims their
  polling makes anyway over the same time.

Needs a PostgreSQL server with TCP ($PGQUEUE_DSN) and Debian's pgbouncer. Run it alone on the
machine: 50 processes start on its cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import bench_tasks  # noqa: E402
from bench import fresh_database, machine, scalar, server_dsn, stop_group  # noqa: E402

from tests.servers import PgBouncer  # noqa: E402

CLAIMS = re.compile(r"^pgqueue_claims_total (\S+)$", re.M)


def _processes() -> list[tuple[int, int, str, int]]:
    """(pid, parent pid, name, CPU clock ticks so far) of every process alive now."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it ended meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        found.append((int(entry.name), int(fields[1]), name, int(fields[11]) + int(fields[12])))
    return found


def _clock_ticks() -> dict[int, int]:
    """CPU time (clock ticks) of every PostgreSQL process of the machine, by pid."""
    return {
        pid: ticks
        for pid, _, name, ticks in _processes()
        if name.startswith(("postgres", "postmaster"))
    }


def _tree_ticks(root: int) -> int:
    """CPU time (clock ticks) of a process and its children (those alive now)."""
    return sum(ticks for pid, parent, _, ticks in _processes() if root in (pid, parent))


def _cpu_share(before: dict[int, int], after: dict[int, int], seconds: float) -> float:
    """Share of one core used between two readings (processes gone meanwhile are left out)."""
    used = sum(after[pid] - before.get(pid, 0) for pid in after)
    return used / os.sysconf("SC_CLK_TCK") / seconds


def _connections(conn: psycopg.Connection[Any]) -> int:
    """Client connections the server holds now, all databases (max_connections counts them)."""
    return int(
        scalar(conn, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
    )


def _claims(ports: range) -> float:
    """Claim statements the fleet has sent, from each worker's metrics."""
    total = 0.0
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        total += sum(float(m) for m in CLAIMS.findall(text))
    return total


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)  # polling the fleet's progress


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=50, help="worker processes (50)")
    parser.add_argument("--jobs", type=int, default=100_000, help="no-op jobs to drain (100,000)")
    parser.add_argument("--pool-size", type=int, default=20, help="PgBouncer server connections")
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="idle CPU window")
    parser.add_argument("--enqueues", type=int, default=40, help="single enqueues, herd test")
    parser.add_argument("--metrics-port", type=int, default=19100, help="first worker's port")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "fleet.json")
    args = parser.parse_args()
    logs = HERE / "results" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ports = range(args.metrics_port, args.metrics_port + args.workers)
    with fresh_database(server_dsn()) as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        described = machine(conn, max_connections=int(scalar(conn, "SHOW max_connections")))
        bouncer = PgBouncer(dsn, "transaction", pool_size=args.pool_size)
        log = (logs / "fleet.log").open("wb")
        supervisor: subprocess.Popen[bytes] | None = None
        try:
            bench_tasks.app.set_dsn(dsn)
            bench_tasks.noop.delay_many([()] * args.jobs, connection=conn)
            before = _connections(conn)
            env = {
                **os.environ,
                "PGQUEUE_DSN": bouncer.dsn,
                "PGQUEUE_LISTEN_DSN": dsn,
                "PGQUEUE_TRANSACTION_POOLING": "1",
                "PYTHONUNBUFFERED": "1",
            }
            started = time.monotonic()
            supervisor = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pgqueue",
                    "worker",
                    "--app",
                    "bench_tasks:app",
                    "--processes",
                    str(args.workers),
                    "--metrics-port",
                    str(args.metrics_port),
                ],
                cwd=HERE,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            peak = 0
            while scalar(conn, "SELECT count(*) FROM pgqueue_finished_jobs") < args.jobs:
                if supervisor.poll() is not None:
                    raise RuntimeError(f"the fleet exited with {supervisor.returncode}")
                if time.monotonic() - started > 900:
                    raise RuntimeError("the fleet did not drain in 15 minutes")
                peak = max(peak, _connections(conn))
                time.sleep(0.5)  # sampling the connections while the fleet drains
            drained = time.monotonic() - started
            row = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded'),"
                " count(*) FILTER (WHERE attempts = 1),"
                " extract(epoch FROM max(finished_at) - min(started_at))"
                " FROM pgqueue_finished_jobs"
            ).fetchone()
            assert row is not None
            finished, succeeded, once, busy_seconds = row
            left = scalar(conn, "SELECT count(*) FROM pgqueue_jobs")
            print(
                f"drain: {finished:,} finished ({succeeded:,} succeeded, {once:,} at the first "
                f"attempt), {left} left; {args.jobs / float(busy_seconds):,.0f} jobs/s from the "
                f"first start to the last finish, {drained:.1f} s from the fleet's exec",
                flush=True,
            )
            _wait(lambda: all(_port_answers(p) for p in ports), 60, "every worker's metrics")
            # Idle: tasks' connections close after the worker's REST_AFTER.
            time.sleep(12)  # letting the fleet come to rest before measuring it at rest
            at_rest = _connections(conn)
            pg_before, fleet_before = _clock_ticks(), _tree_ticks(supervisor.pid)
            claims_before = _claims(ports)
            time.sleep(args.idle_seconds)  # the idle window measured
            idle_claims = _claims(ports) - claims_before
            db_cpu = _cpu_share(pg_before, _clock_ticks(), args.idle_seconds)
            fleet_cpu = (
                (_tree_ticks(supervisor.pid) - fleet_before)
                / os.sysconf("SC_CLK_TCK")
                / args.idle_seconds
            )
            print(
                f"idle: {at_rest} server connections; database CPU {db_cpu:.1%} of a core, the "
                f"fleet's {fleet_cpu:.1%}; {idle_claims / args.idle_seconds:.1f} claims/s polling",
                flush=True,
            )
            # The herd: single jobs, one at a time, each waited for.
            claims_before = _claims(ports)
            began = time.monotonic()
            for _ in range(args.enqueues):
                job = bench_tasks.noop.apply_async(connection=conn)
                job.wait(timeout=30)
            herd_seconds = time.monotonic() - began
            herd_claims = _claims(ports) - claims_before
            polling = idle_claims / args.idle_seconds * herd_seconds
            per_enqueue = (herd_claims - polling) / args.enqueues
            print(
                f"herd: {herd_claims:.0f} claims for {args.enqueues} enqueues in "
                f"{herd_seconds:.1f} s ({polling:.0f} of them polling): {per_enqueue:.1f} claims "
                f"per enqueue with {args.workers} idle workers",
                flush=True,
            )
            figures = {
                "workers": args.workers,
                "jobs": args.jobs,
                "pool_size": args.pool_size,
                "finished": finished,
                "succeeded": succeeded,
                "first_attempt": once,
                "left": left,
                "jobs_per_s": args.jobs / float(busy_seconds),
                "seconds_from_exec": drained,
                "connections_before": before,
                "connections_peak": peak,
                "connections_at_rest": at_rest,
                "idle_db_cpu_share": db_cpu,
                "idle_fleet_cpu_share": fleet_cpu,
                "idle_claims_per_s": idle_claims / args.idle_seconds,
                "claims_per_enqueue": per_enqueue,
            }
        finally:
            if supervisor is not None:
                stop_group(supervisor, 120)
            log.close()
            bouncer.stop()
            bench_tasks.app.close()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"machine": described, "figures": figures}, indent=2))
    print(f"written to {args.output}")
    return 1 if figures["succeeded"] != args.jobs or figures["left"] else 0


def _port_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2):
            return True
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
