"""pgqueue's benchmark: throughput, latency, enqueue speed and churn, each against a baseline
measured in the same run on the same database (the machine is shared and noisy, so ratios
are what carry over).

    make bench                        # full size
    make bench BENCH_ARGS="--quick"   # a small smoke run

Uses $PGQUEUE_DSN's server (or the embedded one) and a fresh database it drops afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from pgqueue import migrate  # noqa: E402
from pgqueue.config import resolve_dsn  # noqa: E402


@dataclass
class Results:
    machine: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, **values: Any) -> None:
        self.figures[name] = values
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
        print(f"{name:<28} {shown}", flush=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50_ms": q[49] * 1000,
        "p95_ms": q[94] * 1000,
        "p99_ms": q[98] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


# -- database -------------------------------------------------------------------------------


def server_dsn() -> str:
    """The server the benchmarks run on: $PGQUEUE_DSN's (or $DATABASE_URL's), else the
    embedded one."""
    server = resolve_dsn(None)
    if server is None:
        from pgqueue import _embedded

        server = _embedded.embedded_dsn()
    return server


@contextmanager
def fresh_database(server: str) -> Any:
    name = f"pgqueue_bench_{os.getpid()}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = make_conninfo(server, dbname=name)
    migrate.upgrade(dsn)
    try:
        yield dsn
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def reset(conn: psycopg.Connection[Any]) -> None:
    """Empty tables, and no pending writes: a checkpoint forced by the last workload's WAL
    must not land in the next one's timing."""
    conn.execute("TRUNCATE pgqueue_jobs, pgqueue_finished_jobs")
    conn.execute("VACUUM (ANALYZE) pgqueue_jobs")
    conn.execute("VACUUM (ANALYZE) pgqueue_finished_jobs")
    # A user without pg_checkpoint gets a noisier run, not a wrong one.
    with suppress(psycopg.errors.InsufficientPrivilege):
        conn.execute("CHECKPOINT")


def scalar(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def stop_group(process: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM a process started in a session of its own; after `grace` seconds, SIGKILL its
    whole process group (a supervisor's children too)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)


def machine(conn: psycopg.Connection[Any], **extra: Any) -> dict[str, Any]:
    """What a run's figures were measured on, printed and returned for its JSON."""
    described = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "postgres": scalar(conn, "SHOW server_version"),
        **extra,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_average": os.getloadavg(),
    }
    print("machine:", json.dumps(described), flush=True)
    return described


def table_stats(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Row counters of the hot table (queued and running jobs), and the finished table's size."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT h.n_tup_ins, h.n_tup_upd, h.n_tup_hot_upd, h.n_tup_del, h.n_dead_tup,"
        " pg_total_relation_size('pgqueue_jobs'), f.n_tup_ins,"
        " pg_total_relation_size('pgqueue_finished_jobs')"
        " FROM pg_stat_user_tables AS h, pg_stat_user_tables AS f"
        " WHERE h.relname = 'pgqueue_jobs' AND f.relname = 'pgqueue_finished_jobs'"
    ).fetchone()
    assert row is not None
    keys = (
        "inserts",
        "updates",
        "hot_updates",
        "deletes",
        "dead",
        "bytes",
        "finished_inserts",
        "finished_bytes",
    )
    return dict(zip(keys, (int(v) for v in row), strict=True))


def settled_stats(conn: psycopg.Connection[Any], timeout: float = 5.0) -> dict[str, int]:
    """Table statistics once the server has flushed every session's counters."""
    deadline = time.monotonic() + timeout
    last = table_stats(conn)
    while time.monotonic() < deadline:
        time.sleep(0.5)  # the statistics collector flushes on its own schedule
        now = table_stats(conn)
        if now == last:
            return now
        last = now
    return last


def wal_lsn(conn: psycopg.Connection[Any]) -> int:
    return int(scalar(conn, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))


# -- workers --------------------------------------------------------------------------------


class Worker:
    """`pgqueue worker --app bench_tasks:app --no-scheduler *args`, started and waited for
    until ready; `scheduler=True` leaves out `--no-scheduler` (the worker as users start it),
    `app` names another app, `wait_ready=False` does not wait (a worker logging at WARNING
    writes no ready line), `ready_lines=N` waits for N (the children of `--processes N`).
    `started_at` is the wall-clock time just before its exec."""

    def __init__(
        self,
        dsn: str,
        log: Path,
        *args: str,
        scheduler: bool = False,
        app: str = "bench_tasks:app",
        wait_ready: bool = True,
        ready_lines: int = 1,
    ) -> None:
        self.log = log.open("wb")
        env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONUNBUFFERED": "1"}
        flags = [] if scheduler else ["--no-scheduler"]
        self.started_at = time.time()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pgqueue", "worker", "--app", app, *flags, *args],
            cwd=HERE,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.log_path = log
        deadline = time.monotonic() + 60
        while wait_ready and log.read_bytes().count(b" ready: ") < ready_lines:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{log.read_text()}")
            time.sleep(0.05)  # polling the log for readiness

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


def wait_finished(
    conn: psycopg.Connection[Any],
    total: int,
    timeout: float,
    process: subprocess.Popen[Any] | None = None,
) -> None:
    """Wait until `total` jobs have finished; raise after `timeout` seconds, or as soon as
    `process` (the worker doing them) has exited."""
    deadline = time.monotonic() + timeout
    while scalar(conn, "SELECT count(*) FROM pgqueue_finished_jobs") < total:
        if time.monotonic() > deadline:
            raise RuntimeError("jobs did not finish in time")
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the worker exited ({process.returncode}) before {total} jobs")
        time.sleep(0.05)  # polling progress


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _all_stats() -> dict[int, list[str]]:
    """Every process's stat fields (see _stat), from one pass over /proc."""
    found = {}
    with suppress(OSError):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                fields = _stat(int(entry))
                if fields is not None:
                    found[int(entry)] = fields
    return found


def tree_cpu_seconds(root: int) -> float | None:
    """The CPU time (user and system) used so far by process `root` and all its descendants:
    for each, its own and that of the children it has reaped (cutime, cstime), so that the
    difference of two readings counts every process that ran in between once, whether it
    started or ended there. Read again when the root reaped a child during the reading (that
    child would be in neither its fields nor the scan). None when /proc does not show it."""
    for _ in range(10):
        before = _stat(root)
        if before is None:
            return None
        stats = _all_stats()
        after = _stat(root)
        if after is None:
            return None
        if after[13:15] != before[13:15]:
            continue  # a child was reaped meanwhile: read again
        stats[root] = after
        kids: dict[int, list[int]] = {}
        for pid, fields in stats.items():
            kids.setdefault(int(fields[1]), []).append(pid)
        ticks, todo = 0, [root]
        while todo:
            pid = todo.pop()
            # utime, stime, cutime, cstime: fields 14-17 of stat, 11-14 here.
            ticks += sum(int(value) for value in stats[pid][11:15])
            todo.extend(kids.get(pid, ()))
        return ticks / os.sysconf("SC_CLK_TCK")
    return None  # children kept ending: no steady reading


def server_root(conn: psycopg.Connection[Any]) -> int | None:
    """The PostgreSQL server's postmaster (the parent of every server process), when the
    server runs on this machine and /proc shows it; None otherwise."""
    backend = scalar(conn, "SELECT pg_backend_pid()")
    try:
        with open(f"/proc/{backend}/comm") as comm:
            if not comm.read().startswith("postgres"):
                return None
    except OSError:
        return None  # another machine, or a PID namespace of its own
    fields = _stat(backend)
    return None if fields is None else int(fields[1])


@dataclass
class CpuUse:
    """CPU time per job of the worker process (with its children: `--processes`) and of the
    database server, over the jobs finished between two readings (None when the server's
    processes cannot be read)."""

    jobs: int
    worker: float | None
    server: float | None

    @classmethod
    def read(cls, conn: psycopg.Connection[Any], worker: Worker) -> CpuUse:
        jobs = scalar(conn, "SELECT count(*) FROM pgqueue_finished_jobs")
        root = server_root(conn)
        return cls(
            jobs,
            tree_cpu_seconds(worker.process.pid),
            None if root is None else tree_cpu_seconds(root),
        )

    def per_job_since(self, start: CpuUse) -> dict[str, float]:
        """Microseconds of CPU per job since `start`, for the worker and the server (what
        could be read; nothing when no job finished in between)."""
        jobs = self.jobs - start.jobs
        figures: dict[str, float] = {}
        if jobs <= 0:
            return figures
        if self.worker is not None and start.worker is not None:
            figures["worker_cpu_us_per_job"] = (self.worker - start.worker) / jobs * 1e6
        if self.server is not None and start.server is not None:
            figures["server_cpu_us_per_job"] = (self.server - start.server) / jobs * 1e6
        return figures


def drain_seconds(
    conn: psycopg.Connection[Any], worker: Worker, n: int, cpu: dict[str, float] | None = None
) -> float:
    """Wait until the worker has finished n jobs, stop it, and return the seconds from the
    first job's start to the last one's finish (the database's clock). `cpu` gets the CPU
    time per job of the worker and of the server, from its first finished job to its last
    (its start-up left out)."""
    try:
        if cpu is not None:
            wait_finished(conn, 1, timeout=600, process=worker.process)
            first = CpuUse.read(conn, worker)
        wait_finished(conn, n, timeout=600)
        if cpu is not None:
            cpu.update(CpuUse.read(conn, worker).per_job_since(first))
    finally:
        worker.stop()
    return float(
        scalar(
            conn,
            "SELECT extract(epoch FROM max(finished_at) - min(started_at))"
            " FROM pgqueue_finished_jobs",
        )
    )


def paced(calls: int, interval: float, call: Callable[[], object]) -> None:
    """Make `calls` calls, one every `interval` seconds: an offered load, not a burst."""
    next_at = time.perf_counter()
    for _ in range(calls):
        call()
        next_at += interval
        pause = next_at - time.perf_counter()
        if pause > 0:
            time.sleep(pause)  # pacing the offered load


# -- workloads ------------------------------------------------------------------------------


def enqueue_noops(conn: psycopg.Connection[Any], n: int, task: str = "noop") -> None:
    import bench_tasks

    getattr(bench_tasks, task).delay_many([() for _ in range(n)], connection=conn)
    conn.commit()


# `limited IS NULL`: the claimable index holds plain jobs only (jobs of tasks with fleet-wide
# limits are claimed apart); without it the ceiling's claim would not use the index. The rows
# are found by `id = ANY(ARRAY(...))`, a primary-key lookup each, as the worker finds them: as
# a join with `c`, the plan depended on the statistics. With none (the fresh database of a
# run, as `reset` analyzes the tables empty) it was a lookup per row; on a database whose
# table had been analyzed while it held jobs (by hand, or by autovacuum where it runs), a hash
# join over a scan of the whole table: 20,000 jobs/s against 48,000 minutes apart.
CLAIM_100 = (
    "WITH c AS (SELECT id FROM pgqueue_jobs WHERE status = 'queued' AND limited IS NULL"
    " AND queue = 'bench' AND run_at <= now()"
    " ORDER BY priority DESC, run_at, id LIMIT 100 FOR UPDATE SKIP LOCKED)"
    " UPDATE pgqueue_jobs j SET status = %s, {changes}"
    " WHERE j.id = ANY(ARRAY(SELECT id FROM c)) RETURNING j.id"
)


def bare_sql_ceiling(dsn: str, n: int, results: Results) -> float:
    """The ceiling: a bare loop that claims 100 jobs with SKIP LOCKED (marks them running,
    one statement), then marks them done (a second), as a queue must, with nothing else to
    do. Also measured: one statement a batch that marks the last batch done and claims the
    next (what the worker's outcomes riding with its claim do), and, for the record,
    claiming and ending 100 jobs in one statement, which no queue can do (a job must be seen
    running before it is done)."""
    claim = CLAIM_100.format(changes="attempts = j.attempts + 1, started_at = now()")
    claim_and_end = CLAIM_100.format(changes="finished_at = now()")
    # One statement a batch: the last batch marked done and the next claimed, as the worker's
    # outcomes ride with its claim (one round trip, one transaction).
    assert claim.startswith("WITH ")
    end_and_claim = (
        "WITH done AS (UPDATE pgqueue_jobs SET status = 'succeeded', finished_at = now()"
        " WHERE id = ANY(%s)), " + claim.removeprefix("WITH ")
    )
    rates = {}
    cpu: dict[str, float] = {}
    for name in ("two_statements", "one_round_trip", "one_statement"):
        with psycopg.connect(dsn, autocommit=True) as conn:
            reset(conn)
            with psycopg.connect(dsn) as tx:
                enqueuer = tx.info.backend_pid
                enqueue_noops(tx, n)
            # Its server process gone before the first reading, its CPU in neither reading.
            deadline = time.monotonic() + 10
            while scalar(conn, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (enqueuer,)):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)  # polling for the enqueue's server process to end
            root = server_root(conn)
            server_before = None if root is None else tree_cpu_seconds(root)
            client_before = time.process_time()
            start = time.perf_counter()
            done = 0
            running: list[int] = []
            while True:
                if name == "one_statement":
                    taken = conn.execute(claim_and_end, ("succeeded",)).rowcount
                elif name == "one_round_trip":
                    ended = len(running)
                    running = [row[0] for row in conn.execute(end_and_claim, (running, "running"))]
                    done += ended
                    if not running and not ended:
                        break
                    continue
                else:
                    ids = [row[0] for row in conn.execute(claim, ("running",))]
                    conn.execute(
                        "UPDATE pgqueue_jobs SET status = 'succeeded', finished_at = now()"
                        " WHERE id = ANY(%s)",
                        (ids,),
                    )
                    taken = len(ids)
                if taken == 0:
                    break
                done += taken
            rates[name] = done / (time.perf_counter() - start)
            if name == "two_statements":
                # What the loop costs the machine per job: its client and the server.
                cpu["client_cpu_us_per_job"] = (time.process_time() - client_before) / done * 1e6
                server_after = None if root is None else tree_cpu_seconds(root)
                if server_after is not None and server_before is not None:
                    spent = server_after - server_before
                    cpu["server_cpu_us_per_job"] = spent / done * 1e6
    results.add(
        "bare_sql_ceiling",
        jobs=n,
        jobs_per_s=rates["two_statements"],
        one_round_trip_jobs_per_s=rates["one_round_trip"],
        one_statement_jobs_per_s=rates["one_statement"],
        **cpu,
    )
    return rates["two_statements"]


# The drain configurations measured: (task, pool, concurrency); the last is pgqueue's fastest,
# the one compared with the peers.
# (task, pool, concurrency, log level); the last is pgqueue's best configuration (issue 17:
# async tasks, 200 slots, no per-job INFO line), the one compared with the ceiling and peers.
DRAINS = (
    ("noop", "thread", 10, "INFO"),
    ("anoop", "thread", 50, "INFO"),
    ("anoop", "thread", 200, "INFO"),
    ("anoop", "thread", 200, "WARNING"),
)
FASTEST_DRAIN = DRAINS[-1]


def drain_name(task: str, pool: str, concurrency: int, log_level: str) -> str:
    suffix = "" if log_level == "INFO" else f"_{log_level.lower()}"
    return f"drain_{task}_{pool}_c{concurrency}{suffix}"


def drain(
    dsn: str,
    n: int,
    concurrency: int,
    pool: str,
    task: str,
    ceiling: float,
    results: Results,
    logs: Path,
    log_level: str = "INFO",
) -> None:
    """One worker process empties n queued no-op jobs (queued before it starts)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        reset(conn)
        # Churn and WAL over each job's whole life: enqueue, claim, completion.
        before, wal_before = settled_stats(conn), wal_lsn(conn)
        with psycopg.connect(dsn) as tx:
            enqueue_noops(tx, n, task)
        worker = Worker(
            dsn,
            logs / f"drain-{task}-{pool}-{concurrency}-{log_level}.log",
            "--concurrency",
            str(concurrency),
            "--pool",
            pool,
            "--log-level",
            log_level,
            wait_ready=log_level == "INFO",  # a WARNING worker writes no ready line
        )
        cpu: dict[str, float] = {}
        seconds = drain_seconds(conn, worker, n, cpu)
        after, wal_after = settled_stats(conn), wal_lsn(conn)
        rate = n / seconds
        results.add(
            drain_name(task, pool, concurrency, log_level),
            jobs=n,
            jobs_per_s=rate,
            vs_ceiling=rate / ceiling,
            **cpu,
            # Row versions written to the hot table per job (its enqueue's included): the
            # insert and the claim's update; ending it deletes the row (counted apart).
            row_versions_per_job=(
                after["inserts"] - before["inserts"] + after["updates"] - before["updates"]
            )
            / n,
            deletes_per_job=(after["deletes"] - before["deletes"]) / n,
            finished_rows_per_job=(after["finished_inserts"] - before["finished_inserts"]) / n,
            wal_bytes_per_job=(wal_after - wal_before) / n,
            dead_tuples=after["dead"],
            hot_table_bytes=after["bytes"],
            finished_table_bytes=after["finished_bytes"],
        )


def fastest_against_ceiling(dsn: str, n: int, results: Results, logs: Path, rounds: int) -> None:
    """The fastest drain and the ceiling again, in alternating pairs, until there are
    `rounds` pairs; its figures become the medians. The machine's speed drifts from one
    minute to the next, and one pair's ratio moved by 20% between runs.

    Each pair also says how many cores the drain would keep busy at TARGET_VS_CEILING of
    its ceiling, at the CPU time per job it was measured to cost the worker and the server
    (`cores_at_target`; when the server's processes can be read): the bound that a drain
    sharing the machine with its database meets before any round trip does."""
    task, pool, concurrency, log_level = FASTEST_DRAIN
    name = drain_name(*FASTEST_DRAIN)
    figure = results.figures[name]
    pairs = [(figure, results.figures["bare_sql_ceiling"])]
    while len(pairs) < rounds:
        scratch = Results()
        ceiling = bare_sql_ceiling(dsn, n, scratch)
        drain(dsn, n, concurrency, pool, task, ceiling, scratch, logs, log_level)
        pairs.append((scratch.figures[name], scratch.figures["bare_sql_ceiling"]))
    measured = ("worker_cpu_us_per_job", "server_cpu_us_per_job")
    figure["rounds"] = [
        {
            "jobs_per_s": drained["jobs_per_s"],
            "ceiling_per_s": ceiling["jobs_per_s"],
            "vs_ceiling": drained["jobs_per_s"] / ceiling["jobs_per_s"],
            **{key: drained[key] for key in measured if key in drained},
            **cores_at_target(drained, ceiling),
        }
        for drained, ceiling in pairs
    ]
    # The rate, the ratio and the CPU figures become the medians of the pairs (the ratio's,
    # not the ratio of medians); the drain's other figures (WAL, rows, table sizes) and the
    # bare_sql_ceiling entry stay those of the first pair.
    for key in (
        "jobs_per_s",
        "vs_ceiling",
        "worker_cpu_us_per_job",
        "server_cpu_us_per_job",
        "cores_busy",
        "cores_at_target",
    ):
        values = [r[key] for r in figure["rounds"] if key in r]
        if values:
            figure[key] = statistics.median(values)
        else:
            figure.pop(key, None)
    cores = "cores_at_target" in figure
    print(
        f"{name}: median of {rounds} pairs with the ceiling: "
        f"{figure['jobs_per_s']:,.0f} jobs/s, vs_ceiling={figure['vs_ceiling']:.3f}"
        + (
            f"; it kept {figure['cores_busy']:.2f} of {os.cpu_count()} cores busy, and at "
            f"{TARGET_VS_CEILING}x the ceiling, at the same CPU per job, would keep "
            f"{figure['cores_at_target']:.2f}"
            if cores
            else ""
        ),
        flush=True,
    )


# Issue 17's target for the best configuration, against the two-statement ceiling.
TARGET_VS_CEILING = 0.9


def cores_busy(jobs_per_s: float, cpu: dict[str, Any]) -> float | None:
    """The cores a drain at `jobs_per_s` kept busy, from its worker's and server's CPU per
    job (`drain_seconds`'s `cpu`); None when either could not be read."""
    keys = ("worker_cpu_us_per_job", "server_cpu_us_per_job")
    if any(key not in cpu for key in keys):
        return None
    return float(jobs_per_s * sum(cpu[key] for key in keys) / 1e6)


def cores_at_target(drained: dict[str, Any], ceiling: dict[str, Any]) -> dict[str, float]:
    """What the pair's drain and ceiling cost in CPU: per job, the drain's worker and server
    together, and the ceiling's client and server; the cores the drain kept busy and those
    a drain at TARGET_VS_CEILING of the ceiling would keep busy at the same cost per job; and
    those the ceiling's loop kept busy. Empty when the server's CPU could not be read. CPU
    time is counted in ticks of 1/SC_CLK_TCK s (10 ms here): a few percent of a drain's."""
    busy = cores_busy(drained["jobs_per_s"], drained)
    if busy is None or "server_cpu_us_per_job" not in ceiling:
        return {}
    per_job = drained["worker_cpu_us_per_job"] + drained["server_cpu_us_per_job"]
    own = ceiling["client_cpu_us_per_job"] + ceiling["server_cpu_us_per_job"]
    return {
        "drain_cpu_us_per_job": per_job,
        "ceiling_client_cpu_us_per_job": ceiling["client_cpu_us_per_job"],
        "ceiling_server_cpu_us_per_job": ceiling["server_cpu_us_per_job"],
        "ceiling_cpu_us_per_job": own,
        "cores_busy": busy,
        "cores_at_target": TARGET_VS_CEILING * ceiling["jobs_per_s"] * per_job / 1e6,
        "ceiling_cores": ceiling["jobs_per_s"] * own / 1e6,
    }


def cpu_bound(dsn: str, jobs: int, results: Results, logs: Path) -> None:
    """CPU-bound jobs on one worker process: the thread pool (one core, the GIL) against
    `--pool process` (every core), both with --concurrency = the number of cores."""
    import bench_tasks

    cores = os.cpu_count() or 1
    rates = {}
    for pool in ("thread", "process"):
        with psycopg.connect(dsn, autocommit=True) as conn:
            reset(conn)
            with psycopg.connect(dsn) as tx:
                bench_tasks.burn.delay_many([(300_000,) for _ in range(jobs)], connection=tx)
            worker = Worker(
                dsn, logs / f"cpu-{pool}.log", "--concurrency", str(cores), "--pool", pool
            )
            rates[pool] = jobs / drain_seconds(conn, worker, jobs)
    results.add(
        f"cpu_bound_c{cores}",
        jobs=jobs,
        thread_jobs_per_s=rates["thread"],
        process_jobs_per_s=rates["process"],
        process_vs_thread=rates["process"] / rates["thread"],
    )


def enqueue_speed(dsn: str, n_single: int, n_bulk: int, results: Results) -> None:
    import bench_tasks

    with psycopg.connect(dsn, autocommit=True) as conn:
        reset(conn)
        # Single: pgqueue's delay() (its own autocommit connection) against a bare INSERT +
        # commit of a job row on one connection, with its values as parameters (as any
        # application inserts rows) and, for the record, spelled as literals; in alternating
        # rounds, so that the machine's drift hits all three alike.
        bench_tasks.app.set_dsn(dsn)
        bench_tasks.noop.delay()  # connect outside the timing

        def bare_insert() -> None:
            conn.execute(
                "INSERT INTO pgqueue_jobs (queue, task_name, args, kwargs) VALUES (%s, %s, %s, %s)",
                ("bench", "bench_tasks.noop", "[]", "{}"),
            )

        def bare_literal_insert() -> None:
            conn.execute(
                "INSERT INTO pgqueue_jobs (queue, task_name, args, kwargs)"
                " VALUES ('bench', 'bench_tasks.noop', '[]', '{}')"
            )

        arms = {
            "pgqueue": bench_tasks.noop.delay,
            "bare": bare_insert,
            "bare_literal": bare_literal_insert,
        }
        spent = dict.fromkeys(arms, 0.0)
        rounds = 20
        for _ in range(rounds):
            for name, enqueue in arms.items():
                start = time.perf_counter()
                for _ in range(n_single // rounds):
                    enqueue()
                spent[name] += time.perf_counter() - start
        rate = {name: n_single / seconds for name, seconds in spent.items()}
        results.add(
            "enqueue_single",
            jobs_per_s=rate["pgqueue"],
            bare_insert_per_s=rate["bare"],
            vs_bare=rate["pgqueue"] / rate["bare"],
            bare_literal_insert_per_s=rate["bare_literal"],
            vs_bare_literal=rate["pgqueue"] / rate["bare_literal"],
        )
        reset(conn)
        start = time.perf_counter()
        with psycopg.connect(dsn) as tx:
            enqueue_noops(tx, n_bulk)
        bulk = n_bulk / (time.perf_counter() - start)
        reset(conn)
        start = time.perf_counter()
        with (
            psycopg.connect(dsn) as tx,
            tx.cursor() as cur,
            cur.copy("COPY pgqueue_jobs (queue, task_name, args, kwargs) FROM STDIN") as copy,
        ):
            for _ in range(n_bulk):
                copy.write_row(("bench", "bench_tasks.noop", "[]", "{}"))
        bare_copy = n_bulk / (time.perf_counter() - start)
        results.add(
            "enqueue_bulk", jobs_per_s=bulk, bare_copy_per_s=bare_copy, vs_bare=bulk / bare_copy
        )
        bench_tasks.app.close()


# Late-committed jobs in the latency workloads: one transaction every LATE_EVERY seconds
# enqueues a job with connection=, stays open LATE_HOLD seconds while the offered load's newer
# jobs are enqueued and claimed, then commits.
LATE_EVERY = 0.2
LATE_HOLD = 0.1


class LateCommits:
    """A thread of application transactions that each enqueue one job with `connection=` and
    commit it LATE_HOLD seconds later: the job's run_at is the transaction's start, before the
    jobs enqueued and claimed meanwhile. Records each job's id and, on the database's clock,
    the moment just before its COMMIT."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.committed: list[tuple[int, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="late-commits", daemon=True)

    def __enter__(self) -> LateCommits:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        import bench_tasks

        with psycopg.connect(self.dsn) as tx:
            while not self._stop.is_set():
                job = bench_tasks.anoop.apply_async(connection=tx)
                time.sleep(LATE_HOLD)  # the offered load goes on meanwhile
                committing = scalar(tx, "SELECT clock_timestamp()")
                tx.commit()
                self.committed.append((job.id, committing))
                self._stop.wait(LATE_EVERY - LATE_HOLD)


def latency(dsn: str, rate: float, seconds: float, results: Results, logs: Path, name: str) -> None:
    """Pickup latency at an offered rate, with one worker (async no-op tasks, --concurrency
    50), and whether the queue keeps up: of `delay()` (created -> started, both on the
    database's clock) and, under the same load, of jobs committed late (LateCommits: from
    just before the COMMIT to the start), each with p50/p99, and their difference."""
    import bench_tasks

    with psycopg.connect(dsn, autocommit=True) as conn:
        reset(conn)
        worker = Worker(dsn, logs / f"{name}.log", "--concurrency", "50")
        bench_tasks.app.set_dsn(dsn)
        try:
            batch = max(1, int(rate / 100))  # enqueue in ticks of 10 ms at high rates
            ticks = max(1, round(seconds * rate / batch))
            with LateCommits(dsn) as late:
                if batch == 1:
                    paced(ticks, 1 / rate, bench_tasks.anoop.delay)
                else:
                    paced(ticks, batch / rate, lambda: bench_tasks.anoop.delay_many([()] * batch))
            total = ticks * batch + len(late.committed)
            backlog = scalar(conn, "SELECT count(*) FROM pgqueue_jobs WHERE started_at IS NULL")
            wait_finished(conn, total, timeout=120)
        finally:
            worker.stop()
            bench_tasks.app.close()
        late_ids = [job_id for job_id, _ in late.committed]
        samples = [
            row[0]
            for row in conn.execute(
                "SELECT extract(epoch FROM started_at - created_at)::float8"
                " FROM pgqueue_finished_jobs WHERE NOT (id = ANY(%s))",
                (late_ids,),
            )
        ]
        late_samples, behind = [], 0
        for started, was_behind in conn.execute(
            "SELECT extract(epoch FROM f.started_at - l.committing)::float8,"
            " EXISTS (SELECT 1 FROM pgqueue_finished_jobs AS n"
            "         WHERE n.id > l.id AND n.started_at < l.committing)"
            " FROM unnest(%s::bigint[], %s::timestamptz[]) AS l(id, committing)"
            " JOIN pgqueue_finished_jobs AS f ON f.id = l.id",
            (late_ids, [at for _, at in late.committed]),
        ):
            late_samples.append(started)
            behind += bool(was_behind)
        ours, theirs = percentiles(samples), percentiles(late_samples)
        results.add(
            name,
            offered_per_s=rate,
            jobs=total,
            backlog_at_end=backlog,
            **ours,
            late_jobs=len(late_samples),
            # Late jobs whose transaction saw a newer job start before it committed: the case
            # measured (the others committed before the worker got past them).
            late_behind_newer=behind,
            **{f"late_{key}": value for key, value in theirs.items()},
            late_minus_delay_p50_ms=theirs["p50_ms"] - ours["p50_ms"],
            late_minus_delay_p99_ms=theirs["p99_ms"] - ours["p99_ms"],
        )


def workflows(dsn: str, chain_steps: int, chord_members: int, results: Results, logs: Path) -> None:
    """The cost of workflows against plain jobs, one worker process (async no-op tasks,
    `--concurrency 200`): a chain of `chain_steps` steps, each released by the transaction
    that ends the one before; a chord of `chord_members` members whose callback is released
    by the last member's; and as baseline, as many plain jobs drained by the same worker. For
    each step that waited, the delay from its parent's outcome (a chord's last member's) to its
    start is reported too: the release, the notification and the claim, nothing queued ahead."""
    import pgqueue

    app = pgqueue.App(dsn)

    @app.task(name="bench_tasks.anoop", queue="bench")
    async def anoop() -> None: ...

    @app.task(name="bench_tasks.count", queue="bench")
    async def count(results: list[object]) -> int: ...

    def run(name: str, steps: int, enqueue: Callable[[], Any], delays: str | None = None) -> float:
        with psycopg.connect(dsn, autocommit=True) as conn:
            reset(conn)
            conn.execute("TRUNCATE pgqueue_workflows, pgqueue_workflow_steps, pgqueue_dependencies")
            started = time.perf_counter()
            enqueue()
            enqueue_seconds = time.perf_counter() - started
            worker = Worker(dsn, logs / f"{name}.log", "--concurrency", "200")
            seconds = drain_seconds(conn, worker, steps)
            samples = [row[0] for row in conn.execute(delays)] if delays else []
        figures: dict[str, float] = {}
        if len(samples) == 1:
            figures = {"release_to_start_ms": samples[0] * 1000}
        elif samples:
            figures = {f"release_to_start_{k}": v for k, v in percentiles(samples).items()}
        results.add(
            name,
            steps=steps,
            seconds=seconds,
            ms_per_step=seconds / steps * 1000,
            enqueue_ms_per_step=enqueue_seconds / steps * 1000,
            **figures,
        )
        return seconds / steps

    plain = run(
        "workflow_baseline_plain_jobs",
        chord_members,
        lambda: anoop.delay_many([()] * chord_members),
    )
    chain = run(
        "workflow_chain",
        chain_steps,
        lambda: pgqueue.chain(*(anoop.si() for _ in range(chain_steps))).apply_async(),
        # A chain's steps have consecutive ids: each one's start after the one before ended.
        "SELECT extract(epoch FROM b.started_at - a.finished_at)::float8"
        " FROM pgqueue_finished_jobs AS a JOIN pgqueue_finished_jobs AS b ON b.id = a.id + 1",
    )
    chord = run(
        "workflow_chord",
        chord_members + 1,
        lambda: pgqueue.chord([anoop.si() for _ in range(chord_members)], count.s()).apply_async(),
        "SELECT extract(epoch FROM c.started_at - (SELECT max(m.finished_at)"
        "  FROM pgqueue_finished_jobs AS m WHERE m.id <> c.id))::float8"
        " FROM pgqueue_finished_jobs AS c WHERE c.task_name = 'bench_tasks.count'",
    )
    results.add(
        "workflow_overhead",
        chain_step_vs_plain_job=chain / plain,
        chord_step_vs_plain_job=chord / plain,
    )
    app.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per drain (20,000)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--output", default=str(HERE / "results" / "latest.json"))
    parser.add_argument(
        "--only",
        choices=["drain", "enqueue", "latency", "cpu", "workflows", "peers", "startup"],
        action="append",
        help="run only these workloads (repeatable); the ceiling runs with drain; peers "
        "(the side-by-side run with PgQueuer, procrastinate and Celery) needs drain and enqueue; "
        "startup is a worker's exec to first job against PgQueuer's (benchmarks/startup.py)",
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        help="seconds of offered load per latency workload (10; quick 3): late commits come "
        "5 a second, so 60 gives 300 of them, for a firmer p99",
    )
    args = parser.parse_args()
    n = 1_000 if args.quick else args.jobs
    logs = HERE / "results" / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    server = server_dsn()
    results = Results()
    with fresh_database(server) as dsn, psycopg.connect(dsn) as conn:
        results.machine = machine(
            conn,
            fsync=scalar(conn, "SHOW fsync"),
            synchronous_commit=scalar(conn, "SHOW synchronous_commit"),
        )
        only = set(
            args.only or ("drain", "enqueue", "latency", "cpu", "workflows", "peers", "startup")
        )
        if "drain" in only:
            ceiling = bare_sql_ceiling(dsn, n, results)
            for task, pool, concurrency, log_level in DRAINS:
                drain(dsn, n, concurrency, pool, task, ceiling, results, logs, log_level)
            if not args.quick:
                fastest_against_ceiling(dsn, n, results, logs, rounds=3)
        if "enqueue" in only:
            enqueue_speed(dsn, 300 if args.quick else 6_000, n, results)
        if "latency" in only:
            seconds = args.latency_seconds or (3 if args.quick else 10)
            latency(dsn, 50, seconds, results, logs, "latency_idle_50_per_s")
            latency(dsn, 2_000, seconds, results, logs, "latency_steady_2000_per_s")
        if "cpu" in only:
            cpu_bound(dsn, 20 if args.quick else 200, results, logs)
        if "workflows" in only:
            workflows(dsn, 100 if args.quick else 1_000, n if args.quick else 10_000, results, logs)
        if {"peers", "drain", "enqueue"} <= only:
            import side_by_side

            task, pool, concurrency, log_level = FASTEST_DRAIN
            ours = {
                "drain_per_s": results.figures[drain_name(*FASTEST_DRAIN)]["jobs_per_s"],
                "bulk_per_s": results.figures["enqueue_bulk"]["jobs_per_s"],
                "settings": f"pgqueue worker --concurrency {concurrency} --pool {pool} "
                f"--log-level {log_level}, "
                f"{'async' if task.startswith('a') else 'sync'} task, delay_many",
            }
            results.figures["side_by_side"] = side_by_side.run(
                server, dsn, n, 3 if args.quick else 10, ours, HERE / "results" / "side_by_side.png"
            )
    if "startup" in only:
        import importlib.util

        if importlib.util.find_spec("pgqueuer") is None:
            print("startup: skipped, PgQueuer is not installed (the bench extra)", flush=True)
        else:
            import startup

            figures = startup.run(server, 2 if args.quick else 5)
            startup.report(figures)
            results.figures["startup"] = figures
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(asdict(results), indent=2))
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
