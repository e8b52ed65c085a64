"""The bloat and long-transaction benchmark: does a steady load keep throughput flat and the hot
table bounded, and how much capacity is left while another session holds an old snapshot?

    make bloat                          # 10 min steady + 5 min held snapshot: about 17 min
    make bloat BLOAT_ARGS="--quick"     # a smoke run: about 1.5 min

Uses $PGQUEUE_DSN's server (or the embedded one) and a fresh database it drops afterwards, with
bench.py's machinery: `fresh_database`, the `Worker` subprocess, `enqueue_noops`, `percentiles`.
Prints one row per sample as it comes, then a summary; writes benchmarks/results/bloat.json and
a chart, benchmarks/results/bloat.png. Exit status: 0 if every verdict holds, 1 if one fails,
2 if the run could not be made.

Phase 1, steady load (`--minutes`, 10). One `pgqueue worker` (`--concurrency`, 20) runs the
`noop` task while an enqueuer thread offers `--rate` jobs/s (1,000) with `delay_many` in 10 ms
ticks, as bench.latency does. Every `--sample` seconds (10) one row: throughput (jobs finished
in the window / its length, both on the database's clock), the load actually offered, backlog
(jobs queued, not started), pickup latency p50/p99 of the jobs started in the window
(started_at - created_at), and for every `pgqueue_*` table (whatever the layout) its heap
(pg_relation_size), indexes (pg_indexes_size), live and dead tuples and vacuum count. The hot
table is `pgqueue_jobs`; its "size" is heap + indexes.

- Flat: the mean throughput of the last minute is within 10% of the first minute's, and the
  backlog did not grow: the last minute's mean backlog exceeds the first's by less than one
  second of offered load. A queue that keeps up holds well under a second of work; one that
  falls 1% short at 1,000 jobs/s piles up 6,000 jobs in 10 minutes. ("A minute" is the
  phase's first and last 60 s, or a third of it if shorter, so --quick works.)
- Bounded: the largest hot size of the second half is at most 1.5 times the largest of the
  first half. Under a steady load the table and its indexes grow to hold the live rows plus
  the dead ones left between two vacuums, then reuse the space vacuum frees: a saw-tooth with
  a ratio near 1. A size growing with time (rows that never leave, vacuum falling behind) gives
  2 for linear growth (the size at T against the size at T/2). 1.5 sits between: room for a
  late first vacuum or a saw-tooth peak, none for steady growth. Growth under 1 MB passes
  whatever the ratio: sizes move by 8 kB pages and index splits, so on the tiny tables of a
  smoke run a ratio means nothing. The second half's growth rate (MB/min, least squares) is
  reported as well.

Phase 2, a long transaction (`--hold-minutes`, 5). Capacity is measured with bursts: the steady
load paused, the queue empty and a CHECKPOINT done, `--burst` jobs (20,000) are queued in one
transaction and the same worker drains them; jobs/s = jobs / (last finished_at - first
started_at), as in bench.drain. Each capacity figure is the median of `--bursts` (3) bursts in a
row: one burst of two seconds differs from the next by 10-15% on this machine. Each burst also
reports how many jobs a claim took and an outcome batch wrote (counted from the jobs' started_at
and finished_at) and, where the server runs on this machine, the CPU each process spent per
1,000 jobs: the worker, its claim and outcome sessions (told apart by the statement they ran
last), the server's background processes. That split is what found the claim planned afresh
each time (see docs/benchmarks.md). First the baseline; then a second session runs `BEGIN ISOLATION
LEVEL REPEATABLE READ; SELECT 1 FROM pgqueue_jobs LIMIT 1`, whose snapshot holds back the xmin
horizon (no vacuum may remove a row version that died after it; since PostgreSQL 14 only in this
database, so the other databases of a shared server are not affected). The steady load resumes
for the hold, sampled as in phase 1 (dead tuples pile up), and then, the snapshot still held,
the burst is measured again; the transaction is rolled back at the end.

- Held: the held capacity is at least 70% of the baseline, and the mean steady throughput
  during the hold at least 70% of phase 1's. Capacity is the main figure: below capacity the
  throughput equals the offered load until the queue falls over, which hides a slowdown; the
  burst shows the headroom left. The baseline is measured just before the hold, so what
  differs between the two bursts is the held snapshot and what it keeps.

Vacuum. pgqueue relies on autovacuum, and a server may have it off (this project's CI server
does, in conf.d). With `--vacuum auto` (the default) and autovacuum off, a stand-in does its
job: every autovacuum_naptime (`--naptime`) it applies autovacuum's trigger rules (dead tuples
over threshold + scale factor x reltuples, the same for inserts, and for analyze) with the
server's settings and each table's reloptions, and runs VACUUM or ANALYZE at autovacuum's cost
delay and limit. Unlike autovacuum it does not give way to conflicting locks (pgqueue takes
none) and visits tables one after another. `--vacuum server` leaves it to the server, even if
that means no vacuum at all; `--vacuum emulate` runs the stand-in anyway.

Where jobs live. The layout may change (finished jobs moving out of `pgqueue_jobs`), so every
query that knows where jobs are is in `Jobs`, finished jobs are counted by `Jobs.finished` and
`Jobs.finished_after` only (the waits use them, not bench.wait_finished), and table sizes come
from every `pgqueue_*` table the catalog lists.

The observer's own load. The machine has two cores, shared by the worker, its database
sessions and this process, so whatever the bench reads while a burst runs is taken from the
burst. The sampler's queries use indexes (the claimable partial index, primary-key ranges
bounded by the enqueued ids), so its own load stays small as the tables grow; each row reports
what it cost (sample_ms). Waiting for a burst counts only the burst's jobs, by a primary-key
range of the finished jobs: counting every finished job at each look, as this bench did until
2026-11-21, cost 25-50 ms every 50 ms once the tables held 400,000 jobs; in one run of the same
shape it put the held burst at 38% of the baseline, against 54% counted by range.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import bench
import bench_tasks
import psycopg
from psycopg import sql

HERE = bench.HERE
RESULTS = HERE / "results"
HOT_TABLE = "pgqueue_jobs"
HELD_SHARE = 0.70  # the promise: 70% of the baseline with a snapshot held
FLAT_TOLERANCE = 0.10  # last minute's throughput within 10% of the first minute's
BOUND_RATIO = 1.5  # second half's largest hot size against the first half's
BOUND_SLACK = 1024 * 1024  # growth under 1 MB passes whatever the ratio (tiny tables)
POLL = 0.05  # seconds between looks at the database while waiting for something
STALL_TIMEOUT = 120.0  # no job finished for this long while waiting: give up
HOLDER_NAME = "pgqueue-bloat-holder"
MB = 1024 * 1024


# -- where jobs live: the one place that knows the layout -----------------------------------


class Jobs:
    """Every query that depends on where jobs are kept. Today finished jobs stay in
    pgqueue_jobs; with the `pgqueue_all_jobs` view (finished jobs in a table of their own) the
    queries read the view, whose primary-key range scans reach both tables."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        has_view = bench.scalar(conn, "SELECT to_regclass('pgqueue_all_jobs') IS NOT NULL")
        self.every = "pgqueue_all_jobs" if has_view else HOT_TABLE
        self.finished_table = "pgqueue_finished_jobs" if has_view else HOT_TABLE

    def finished(self, conn: psycopg.Connection[Any]) -> int:
        """Jobs finished so far: the count every throughput figure and every wait rests on."""
        return int(
            bench.scalar(conn, f"SELECT count(*) FROM {self.every} WHERE finished_at IS NOT NULL")
        )

    def backlog_and_lowest(self, conn: psycopg.Connection[Any]) -> tuple[float, int, int | None]:
        """(database clock, queued jobs, lowest queued id), one statement, one snapshot."""
        row = conn.execute(
            "SELECT extract(epoch FROM clock_timestamp())::float8, count(*), min(id)"
            f" FROM {HOT_TABLE} WHERE status = 'queued'"
        ).fetchone()
        assert row is not None
        return float(row[0]), int(row[1]), row[2]

    def pickup_latencies(
        self, conn: psycopg.Connection[Any], lowest_id: int, since: float, until: float
    ) -> list[float]:
        """started_at - created_at of the jobs started in (since, until], in seconds."""
        cur = conn.execute(
            "SELECT extract(epoch FROM started_at - created_at)::float8"
            f" FROM {self.every} WHERE id >= %s"
            " AND started_at > to_timestamp(%s) AND started_at <= to_timestamp(%s)",
            (lowest_id, since, until),
        )
        return [row[0] for row in cur]

    def finished_after(self, conn: psycopg.Connection[Any], after_id: int) -> int:
        """Jobs finished so far among those with ids above `after_id` (a burst): a range of the
        primary key of the table that holds finished jobs, so that waiting for a burst reads
        the burst, not all of history. Counting every finished job every POLL cost 25-50 ms a
        look once 400,000 jobs were kept, taken from the burst being timed on two cores."""
        return int(
            bench.scalar(
                conn,
                f"SELECT count(*) FROM {self.finished_table} WHERE id > %s"
                " AND finished_at IS NOT NULL",
                (after_id,),
            )
        )

    def highest_id(self, conn: psycopg.Connection[Any]) -> int:
        return int(bench.scalar(conn, f"SELECT coalesce(max(id), 0) FROM {self.every}"))

    def burst(
        self, conn: psycopg.Connection[Any], after_id: int
    ) -> tuple[int, float, float, int, int]:
        """(jobs, seconds from first start to last finish, first start, claims, outcome
        batches) of the jobs with ids above `after_id`: a burst queued while nothing else was.
        A claim's jobs share their started_at, a batch's their finished_at (each statement is
        its own transaction, and now() is the transaction's start), so the distinct values
        count the statements that took or ended a job."""
        row = conn.execute(
            "SELECT count(*), extract(epoch FROM max(finished_at) - min(started_at))::float8,"
            " extract(epoch FROM min(started_at))::float8, count(DISTINCT started_at),"
            f" count(DISTINCT finished_at) FROM {self.every} WHERE id > %s",
            (after_id,),
        ).fetchone()
        assert row is not None
        return int(row[0]), float(row[1]), float(row[2]), int(row[3]), int(row[4])


def table_sizes(conn: psycopg.Connection[Any]) -> dict[str, dict[str, int]]:
    """Heap, indexes, live and dead tuples and vacuums of every pgqueue_* table."""
    cur = conn.execute(
        "SELECT relname, pg_relation_size(relid), pg_indexes_size(relid), n_live_tup,"
        " n_dead_tup, vacuum_count + autovacuum_count FROM pg_stat_user_tables"
        " WHERE relname LIKE 'pgqueue\\_%' ORDER BY relname"
    )
    keys = ("heap", "indexes", "live", "dead", "vacuums")
    return {row[0]: dict(zip(keys, (int(v) for v in row[1:]), strict=True)) for row in cur}


def hot_size(tables: dict[str, dict[str, int]]) -> int:
    hot = tables.get(HOT_TABLE, {})
    return hot.get("heap", 0) + hot.get("indexes", 0)


# -- where the CPU goes -----------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_ms(pid: int) -> float | None:
    """User + system CPU of a process (all its threads) so far, from /proc; None if it is not
    on this machine (a remote server) or has exited."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) * 1000 / CLOCK_TICKS  # utime, stime


def cpu_by_role(conn: psycopg.Connection[Any], worker_pid: int) -> dict[int, tuple[str, float]]:
    """pid -> (role, CPU ms so far) for the worker process and every server process this
    machine can see. A server session's role is told by the statement it ran last: the
    worker's claim and outcome connections run one statement each, over and over."""
    roles = {worker_pid: "worker"}
    own = conn.info.backend_pid
    for pid, backend_type, app, query in conn.execute(
        "SELECT pid, backend_type, application_name, query FROM pg_stat_activity"
    ):
        if pid == own:
            roles[pid] = "db: bench"
        elif backend_type != "client backend":
            roles[pid] = f"db: {backend_type}"
        elif app != "pgqueue":
            roles[pid] = "db: other"
        elif "picked AS" in query:
            roles[pid] = "db: claim"
        elif "jsonb_to_recordset" in query:
            roles[pid] = "db: outcomes"
        else:
            roles[pid] = "db: pgqueue other"
    return {
        pid: (role, ms) for pid, role in roles.items() if (ms := process_cpu_ms(pid)) is not None
    }


def cpu_spent(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU ms per role between two readings, of the processes seen in both (a session that
    started or ended in between is left out), with the total."""
    spent: dict[str, float] = {}
    for pid, (role, ms) in after.items():
        if pid in before:
            spent[role] = spent.get(role, 0.0) + ms - before[pid][1]
    spent = dict(sorted(spent.items(), key=lambda item: -item[1]))
    spent["total"] = sum(spent.values())
    return spent


def median_cpu(runs: list[dict[str, Any]]) -> dict[str, float]:
    roles = {role for run in runs for role in run["cpu_ms_per_1000_jobs"]}
    return {
        role: statistics.median(run["cpu_ms_per_1000_jobs"].get(role, 0.0) for run in runs)
        for role in sorted(roles)
    }


# -- processes and threads ------------------------------------------------------------------


class Worker(bench.Worker):
    """bench.Worker that does not leave its process behind when it fails to start."""

    def __init__(self, dsn: str, log: Path, *args: str) -> None:
        try:
            super().__init__(dsn, log, *args)
        except BaseException:
            process = getattr(self, "process", None)
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: it and its children
                process.wait(10)
            if hasattr(self, "log"):
                self.log.close()
            raise

    def check(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"the worker exited ({self.process.returncode}); see {self.log_path}"
            )


class Enqueuer(threading.Thread):
    """Offers a steady load from a thread, so the main thread can sample on time: `batch` jobs
    per 10 ms tick with delay_many, as bench.latency does. Pausable for the bursts."""

    def __init__(self, rate: float) -> None:
        super().__init__(name="enqueuer", daemon=True)
        self.batch = max(1, round(rate / 100))
        self.interval = self.batch / rate
        self.enqueued = 0
        self.max_id = 0  # every job at or below it is committed (one enqueuer, in order)
        self.error: BaseException | None = None
        self._go = threading.Event()
        self._halt = threading.Event()
        self._tick = threading.Lock()

    def run(self) -> None:
        try:
            next_at: float | None = None
            while not self._halt.is_set():
                with self._tick:  # pause() waits for a tick under way
                    if self._go.is_set():
                        ids = bench_tasks.noop.delay_many([() for _ in range(self.batch)])
                        self.max_id = max(ids)
                        self.enqueued += len(ids)
                        now = time.perf_counter()
                        # Behind by more than a second (a stall): offer less, don't flood.
                        next_at = max((next_at or now) + self.interval, now - 1.0)
                    else:
                        next_at = None
                if next_at is None:
                    self._go.wait(0.1)  # paused: idle until resumed (or stopped)
                    continue
                pause = next_at - time.perf_counter()
                if pause > 0:
                    self._halt.wait(pause)  # pacing the offered load
        except BaseException as exc:
            self.error = exc

    def resume(self) -> None:
        self._go.set()

    def pause(self) -> None:
        self._go.clear()
        with self._tick:
            pass

    def stop(self) -> None:
        self._go.clear()
        self._halt.set()
        if self.is_alive():
            self.join(30)

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the enqueuer failed: {self.error!r}") from self.error


@dataclass
class VacuumEvent:
    at_s: float
    table: str
    action: str
    seconds: float
    dead_before: int


class AutovacuumStandIn(threading.Thread):
    """Autovacuum's work for a server that has it off: every naptime, the tables autovacuum
    would pick (its trigger rules, the server's settings, each table's reloptions) get VACUUM
    or ANALYZE at autovacuum's cost delay and limit."""

    RULES = (
        "vacuum_threshold",
        "vacuum_scale_factor",
        "vacuum_insert_threshold",
        "vacuum_insert_scale_factor",
        "analyze_threshold",
        "analyze_scale_factor",
        "vacuum_cost_delay",
        "vacuum_cost_limit",
    )

    def __init__(self, dsn: str, naptime: float, clock_zero: float) -> None:
        super().__init__(name="autovacuum-stand-in", daemon=True)
        self.dsn = dsn
        self.naptime = naptime
        self.clock_zero = clock_zero
        self.events: list[VacuumEvent] = []
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                self._conn = conn
                conn.execute("SET application_name = 'pgqueue-bloat-autovacuum'")
                defaults = self._defaults(conn)
                while not self._halt.wait(self.naptime):  # pacing: one pass per naptime
                    self._pass(conn, defaults)
        except BaseException as exc:
            self.error = exc

    def _defaults(self, conn: psycopg.Connection[Any]) -> dict[str, float]:
        rows = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings"
                " WHERE name LIKE 'autovacuum\\_%' OR name = 'vacuum_cost_limit'"
            ).fetchall()
        )
        values = {rule: float(rows[f"autovacuum_{rule}"]) for rule in self.RULES}
        if values["vacuum_cost_limit"] < 0:  # -1: autovacuum uses vacuum_cost_limit
            values["vacuum_cost_limit"] = float(rows["vacuum_cost_limit"])
        return values

    def _pass(self, conn: psycopg.Connection[Any], defaults: dict[str, float]) -> None:
        cur = conn.execute(
            "SELECT s.relname, s.n_dead_tup, s.n_ins_since_vacuum, s.n_mod_since_analyze,"
            " greatest(c.reltuples, 0), coalesce(c.reloptions, '{}')"
            " FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
            " WHERE s.relname LIKE 'pgqueue\\_%' AND c.relkind = 'r' ORDER BY s.relname"
        )
        for name, dead, inserted, modified, reltuples, reloptions in cur.fetchall():
            options = dict(option.split("=", 1) for option in reloptions)
            if options.get("autovacuum_enabled", "true").lower() in ("false", "off", "0"):
                continue
            rule = {
                key: float(options.get(f"autovacuum_{key}", value))
                for key, value in defaults.items()
            }
            vacuum = dead > rule["vacuum_threshold"] + rule["vacuum_scale_factor"] * reltuples
            if rule["vacuum_insert_threshold"] >= 0:  # -1 turns insert-driven vacuum off
                vacuum = vacuum or (
                    inserted
                    > rule["vacuum_insert_threshold"]
                    + rule["vacuum_insert_scale_factor"] * reltuples
                )
            analyze = (
                modified > rule["analyze_threshold"] + rule["analyze_scale_factor"] * reltuples
            )
            if not (vacuum or analyze):
                continue
            action = "VACUUM (ANALYZE)" if vacuum and analyze else "VACUUM" if vacuum else "ANALYZE"
            conn.execute(f"SET vacuum_cost_delay = {rule['vacuum_cost_delay']:g}")
            conn.execute(f"SET vacuum_cost_limit = {int(rule['vacuum_cost_limit'])}")
            started = time.monotonic()
            conn.execute(sql.SQL(action + " {}").format(sql.Identifier(name)))
            at = bench.scalar(conn, "SELECT extract(epoch FROM clock_timestamp())::float8")
            self.events.append(
                VacuumEvent(at - self.clock_zero, name, action, time.monotonic() - started, dead)
            )

    def stop(self) -> None:
        """Stop now: the run is over, so a VACUUM under way is cancelled."""
        self._halt.set()
        if self.is_alive() and self._conn is not None:
            self._conn.cancel()
        if self.is_alive():
            self.join(30)

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the autovacuum stand-in failed: {self.error!r}") from self.error


# -- the run --------------------------------------------------------------------------------


@dataclass
class Snapshot:
    at: float  # database clock, epoch seconds
    finished: int
    enqueued: int
    backlog: int
    lowest_open_id: int  # every job started after `at` has an id at least this
    tables: dict[str, dict[str, int]]


@dataclass
class Report:
    machine: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    phases: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    bursts: dict[str, dict[str, Any]] = field(default_factory=dict)
    holder: dict[str, Any] = field(default_factory=dict)
    vacuums: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


COLUMNS = (
    f"{'t s':>6} {'phase':<6} {'offered/s':>9} {'done/s':>8} {'backlog':>8} {'p50 ms':>7}"
    f" {'p99 ms':>7} {'hot MB':>7} {'heap':>6} {'index':>6} {'live':>8} {'dead':>9} {'vac':>4}"
    f" {'other MB':>8} {'ms':>5}"
)


class Run:
    """One benchmark run on a fresh database: the worker, the enqueuer, the samples."""

    def __init__(self, dsn: str, conn: psycopg.Connection[Any], args: argparse.Namespace) -> None:
        self.dsn = dsn
        self.conn = conn
        self.args = args
        self.jobs = Jobs(conn)
        self.report = Report()
        self.enqueuer = Enqueuer(args.rate)
        self.burst_jobs = 0  # jobs queued by the bursts (the enqueuer counts its own)
        self.highest_burst_id = 0
        self.worker: Worker | None = None
        self.stand_in: AutovacuumStandIn | None = None
        self.clock_zero = self.clock()

    def clock(self) -> float:
        return float(bench.scalar(self.conn, "SELECT extract(epoch FROM clock_timestamp())"))

    def elapsed(self, at: float) -> float:
        return at - self.clock_zero

    def check(self) -> None:
        """Fail early, and loudly, when a part of the run has died."""
        assert self.worker is not None
        self.worker.check()
        self.enqueuer.check()
        if self.stand_in is not None:
            self.stand_in.check()

    # -- sampling --

    def snapshot(self) -> Snapshot:
        # Read before the database: every id up to it is committed, so visible below.
        committed = max(self.enqueuer.max_id, self.highest_burst_id)
        enqueued = self.enqueuer.enqueued + self.burst_jobs
        at, backlog, lowest_queued = self.jobs.backlog_and_lowest(self.conn)
        finished = self.jobs.finished(self.conn)
        lowest = committed + 1 if lowest_queued is None else min(lowest_queued, committed + 1)
        return Snapshot(at, finished, enqueued, backlog, lowest, table_sizes(self.conn))

    def window(self, phase: str, before: Snapshot, began: float) -> tuple[Snapshot, dict[str, Any]]:
        now = self.snapshot()
        seconds = now.at - before.at
        waits = self.jobs.pickup_latencies(self.conn, before.lowest_open_id, before.at, now.at)
        latency = bench.percentiles(waits) if len(waits) >= 2 else {}
        hot = now.tables.get(HOT_TABLE, {})
        others = sum(t["heap"] + t["indexes"] for n, t in now.tables.items() if n != HOT_TABLE)
        sample = {
            "phase": phase,
            "elapsed_s": self.elapsed(now.at),
            "window_s": seconds,
            "offered_per_s": (now.enqueued - before.enqueued) / seconds,
            "jobs_per_s": (now.finished - before.finished) / seconds,
            "backlog": now.backlog,
            "started": len(waits),
            "p50_pickup_ms": latency.get("p50_ms"),
            "p99_pickup_ms": latency.get("p99_ms"),
            "hot_bytes": hot_size(now.tables),
            "other_bytes": others,
            "tables": now.tables,
            "sample_ms": (time.monotonic() - began) * 1000,
        }
        print(
            f"{sample['elapsed_s']:6.0f} {phase:<6} {sample['offered_per_s']:9.0f}"
            f" {sample['jobs_per_s']:8.0f} {now.backlog:8d} {_ms(latency.get('p50_ms'))}"
            f" {_ms(latency.get('p99_ms'))} {sample['hot_bytes'] / MB:7.1f}"
            f" {hot.get('heap', 0) / MB:6.1f} {hot.get('indexes', 0) / MB:6.1f}"
            f" {hot.get('live', 0):8d} {hot.get('dead', 0):9d} {hot.get('vacuums', 0):4d}"
            f" {others / MB:8.1f} {sample['sample_ms']:5.0f}",
            flush=True,
        )
        return now, sample

    def steady(self, phase: str, seconds: float) -> list[dict[str, Any]]:
        """Offer the steady load for `seconds`, one sample per --sample seconds."""
        samples: list[dict[str, Any]] = []
        before = self.snapshot()
        begin_s = self.elapsed(before.at)
        self.enqueuer.resume()
        start = time.monotonic()
        end = start + seconds
        tick = start
        while True:
            tick = min(tick + self.args.sample, end)
            pause = tick - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # pacing the samples
            self.check()
            began = time.monotonic()
            before, sample = self.window(phase, before, began)
            samples.append(sample)
            if tick >= end:
                break
        self.enqueuer.pause()
        self.report.samples.extend(samples)
        end_s = samples[-1]["elapsed_s"]
        self.report.phases.append({"name": phase, "start_s": begin_s, "end_s": end_s})
        return samples

    # -- waiting and bursts --

    def wait_all_finished(self, timeout: float) -> None:
        """Until every job queued so far has finished; fails on a stall or a dead worker."""
        total = self.enqueuer.enqueued + self.burst_jobs
        self.wait_finished(lambda: self.jobs.finished(self.conn), total, timeout)

    def wait_finished(self, done_so_far: Callable[[], int], total: int, timeout: float) -> None:
        """Until `done_so_far()` reaches `total`; fails on a stall or a dead worker."""
        deadline = time.monotonic() + timeout
        last, last_change = -1, time.monotonic()
        while (done := done_so_far()) < total:
            self.check()
            now = time.monotonic()
            if done != last:
                last, last_change = done, now
            if now > deadline or now - last_change > STALL_TIMEOUT:
                raise RuntimeError(f"{total - done} of {total} jobs did not finish in time")
            time.sleep(POLL)  # polling progress, under a deadline

    def burst(self, name: str) -> dict[str, Any]:
        """Capacity: --bursts bursts one after another, each with the queue empty and the load
        paused; the median burst's jobs/s is the figure (one burst of two seconds varies by
        10-15% from the next on this machine)."""
        runs = [
            self.one_burst(f"{name} {n + 1}/{self.args.bursts}") for n in range(self.args.bursts)
        ]
        rates = [run["jobs_per_s"] for run in runs]
        median = statistics.median(rates)
        result = {
            "jobs_per_s": median,
            "runs": runs,
            "spread": (max(rates) - min(rates)) / median,
            "start_s": runs[0]["start_s"],
            "first_start_s": runs[0]["first_start_s"],
            "end_s": runs[-1]["end_s"],
            "cpu_ms_per_1000_jobs": median_cpu(runs),
        }
        self.report.bursts[name] = result
        print(
            f"-- {name}: median {median:,.0f} jobs/s of {len(runs)} bursts"
            f" ({', '.join(f'{r:,.0f}' for r in rates)})",
            flush=True,
        )
        return result

    def one_burst(self, name: str) -> dict[str, Any]:
        """--burst jobs queued at once into an empty queue, drained by the worker."""
        self.wait_all_finished(timeout=600)
        # Every burst starts just after a checkpoint, as bench.py's workloads do: a 5-minute
        # hold ends about when a timed checkpoint (checkpoint_timeout, 5 min by default) is
        # writing, and a burst of two seconds that overlaps one by chance measures the
        # checkpoint as much as the queue. Without the privilege, a noisier run.
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            self.conn.execute("CHECKPOINT")
        after_id = max(self.jobs.highest_id(self.conn), self.enqueuer.max_id)
        start = self.elapsed(self.clock())
        assert self.worker is not None
        cpu_before = cpu_by_role(self.conn, self.worker.process.pid)
        with psycopg.connect(self.dsn) as tx:
            bench.enqueue_noops(tx, self.args.burst)
        self.burst_jobs += self.args.burst
        self.wait_finished(
            lambda: self.jobs.finished_after(self.conn, after_id), self.args.burst, timeout=600
        )
        cpu = cpu_spent(cpu_before, cpu_by_role(self.conn, self.worker.process.pid))
        jobs, seconds, first_start, claims, batches = self.jobs.burst(self.conn, after_id)
        cpu_per_1000 = {role: ms * 1000 / jobs for role, ms in cpu.items()}
        self.highest_burst_id = self.jobs.highest_id(self.conn)
        result = {
            "jobs": jobs,
            "seconds": seconds,
            "jobs_per_s": jobs / seconds,
            "start_s": start,
            "first_start_s": self.elapsed(first_start),
            "end_s": self.elapsed(first_start) + seconds,
            "hot_bytes_after": hot_size(table_sizes(self.conn)),
            "jobs_per_claim": jobs / claims,
            "jobs_per_outcome_batch": jobs / batches,
            "cpu_ms_per_1000_jobs": cpu_per_1000,
        }
        print(
            f"-- burst {name}: {jobs:,} jobs in {seconds:.2f} s = {result['jobs_per_s']:,.0f}"
            f" jobs/s; {jobs / claims:.1f} jobs a claim, {jobs / batches:.1f} an outcome batch;"
            " CPU ms per 1,000 jobs: "
            + ", ".join(f"{role} {ms:.0f}" for role, ms in cpu_per_1000.items() if round(ms)),
            flush=True,
        )
        return result

    def open_holder(self) -> psycopg.Connection[Any]:
        """The second session: a REPEATABLE READ snapshot, taken and then left open."""
        holder = psycopg.connect(self.dsn, autocommit=True)
        try:
            holder.execute(f"SET application_name = '{HOLDER_NAME}'")
            holder.execute("SET idle_in_transaction_session_timeout = 0")
            holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            holder.execute(f"SELECT 1 FROM {HOT_TABLE} LIMIT 1")
            self.report.holder = {
                "pid": holder.info.backend_pid,
                "opened_s": self.elapsed(self.clock()),
                "xmin_at_open": self.holder_xmin(holder),
            }
        except BaseException:
            holder.close()
            raise
        print(f"-- session {holder.info.backend_pid} holds a snapshot: {self.report.holder}")
        return holder

    def holder_xmin(self, holder: psycopg.Connection[Any]) -> dict[str, Any]:
        row = self.conn.execute(
            "SELECT backend_xmin::text, age(backend_xmin), state FROM pg_stat_activity"
            " WHERE pid = %s",
            (holder.info.backend_pid,),
        ).fetchone()
        if row is None or row[0] is None:
            raise RuntimeError("the long transaction holds no snapshot")
        return {"backend_xmin": row[0], "xmin_age": row[1], "state": row[2]}

    # -- the whole run --

    def run(self) -> None:
        """Both phases. Every part started is stopped on the way out, whatever fails: an
        ExitStack runs each cleanup even when an earlier one raises."""
        args = self.args
        logs = RESULTS / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as cleanup:
            bench_tasks.app.set_dsn(self.dsn)
            cleanup.callback(bench_tasks.app.close)
            worker = Worker(
                self.dsn, logs / "bloat-worker.log", "--concurrency", str(args.concurrency)
            )
            self.worker = worker
            cleanup.callback(worker.stop)
            if args.vacuum_mode == "emulate":
                stand_in = AutovacuumStandIn(self.dsn, args.naptime, self.clock_zero)
                self.stand_in = stand_in
                cleanup.callback(self._record_vacuums, stand_in)
                cleanup.callback(stand_in.stop)
                stand_in.start()
            cleanup.callback(self.enqueuer.stop)
            self.enqueuer.start()
            print(COLUMNS, flush=True)
            self.steady("steady", args.minutes * 60)
            self.burst("baseline")
            holder = self.open_holder()
            cleanup.callback(holder.close)
            self.steady("hold", args.hold_minutes * 60)
            self.burst("held")
            holder.execute("SELECT 1")  # still there, still in its transaction
            self.report.holder["at_end"] = self.holder_xmin(holder)
            holder.execute("ROLLBACK")
            self.report.holder["rolled_back_s"] = self.elapsed(self.clock())
        if not args.keep_log:
            size = worker.log_path.stat().st_size
            worker.log_path.unlink()
            print(f"worker log removed ({size / MB:.0f} MB; --keep-log keeps it)")

    def _record_vacuums(self, stand_in: AutovacuumStandIn) -> None:
        self.report.vacuums = [asdict(event) for event in stand_in.events]


def _ms(value: float | None) -> str:
    return f"{value:7.1f}" if value is not None else f"{'-':>7}"


# -- verdicts -------------------------------------------------------------------------------


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def slope_per_minute(samples: list[dict[str, Any]], key: str) -> float:
    """Least-squares growth of `key` per minute over the samples."""
    if len(samples) < 2:
        return math.nan
    xs = [s["elapsed_s"] / 60 for s in samples]
    ys = [float(s[key]) for s in samples]
    return statistics.linear_regression(xs, ys).slope


def judge(report: Report, args: argparse.Namespace) -> dict[str, Any]:
    steady = [s for s in report.samples if s["phase"] == "steady"]
    hold = [s for s in report.samples if s["phase"] == "hold"]
    # "A minute": the first and the last 60 s of samples, or a third of them if fewer.
    edge = max(1, min(round(60 / args.sample), len(steady) // 3))
    first, last = steady[:edge], steady[-edge:]
    first_rate = mean([s["jobs_per_s"] for s in first])
    last_rate = mean([s["jobs_per_s"] for s in last])
    backlog_growth = mean([s["backlog"] for s in last]) - mean([s["backlog"] for s in first])
    flat = abs(last_rate - first_rate) <= FLAT_TOLERANCE * first_rate and backlog_growth < args.rate

    first_half, second_half = steady[: len(steady) // 2], steady[len(steady) // 2 :]
    first_max = max(s["hot_bytes"] for s in first_half)
    second_max = max(s["hot_bytes"] for s in second_half)
    bound_ratio = second_max / first_max if first_max else math.inf
    tables = sorted({name for s in steady for name in s["tables"]})

    steady_rate = mean([s["jobs_per_s"] for s in steady])
    offered = mean([s["offered_per_s"] for s in steady])
    hold_rate = mean([s["jobs_per_s"] for s in hold])
    hold_offered = mean([s["offered_per_s"] for s in hold])
    baseline = report.bursts["baseline"]["jobs_per_s"]
    held = report.bursts["held"]["jobs_per_s"]
    capacity_ratio = held / baseline
    hold_ratio = hold_rate / steady_rate
    hot_end = hold[-1]["tables"].get(HOT_TABLE, {})
    return {
        "flat": {
            "ok": flat,
            "rule": f"|last - first| <= {FLAT_TOLERANCE:.0%} of first, backlog growth < rate x 1 s",
            "edge_s": sum(s["window_s"] for s in first),
            "first_jobs_per_s": first_rate,
            "last_jobs_per_s": last_rate,
            "change": (last_rate - first_rate) / first_rate,
            "backlog_growth": backlog_growth,
            "mean_jobs_per_s": steady_rate,
            "mean_offered_per_s": offered,
            "offered_short": offered < 0.95 * args.rate,
            "p99_pickup_ms_worst": max((s["p99_pickup_ms"] or 0.0) for s in steady),
        },
        "bounded": {
            "ok": bound_ratio <= BOUND_RATIO or second_max - first_max < BOUND_SLACK,
            "rule": f"max hot size, second half <= {BOUND_RATIO} x first half, or grown < 1 MB",
            "first_half_max_bytes": first_max,
            "second_half_max_bytes": second_max,
            "ratio": bound_ratio,
            "second_half_growth_mb_per_min": slope_per_minute(second_half, "hot_bytes") / MB,
            "tables_at_end": steady[-1]["tables"],
            "tables_max_bytes": {
                name: max(
                    s["tables"][name]["heap"] + s["tables"][name]["indexes"]
                    for s in steady
                    if name in s["tables"]
                )
                for name in tables
            },
        },
        "held": {
            "ok": capacity_ratio >= HELD_SHARE and hold_ratio >= HELD_SHARE,
            "rule": f"held/baseline capacity >= {HELD_SHARE:.0%}, hold/steady throughput >= "
            f"{HELD_SHARE:.0%}",
            "baseline_jobs_per_s": baseline,
            "held_jobs_per_s": held,
            "capacity_ratio": capacity_ratio,
            "hold_mean_jobs_per_s": hold_rate,
            "hold_mean_offered_per_s": hold_offered,
            "hold_offered_short": hold_offered < 0.95 * args.rate,
            "hold_vs_steady": hold_ratio,
            "hold_backlog_at_end": hold[-1]["backlog"],
            "hold_p99_pickup_ms_worst": max((s["p99_pickup_ms"] or 0.0) for s in hold),
            "hot_bytes_at_hold_start": hold[0]["hot_bytes"],
            "hot_bytes_at_hold_end": hold[-1]["hot_bytes"],
            "hot_dead_at_hold_end": hot_end.get("dead"),
            "holder_xmin_age_at_end": report.holder.get("at_end", {}).get("xmin_age"),
        },
    }


def print_summary(summary: dict[str, Any]) -> None:
    flat, bounded, held = summary["flat"], summary["bounded"], summary["held"]
    verdict = {True: "PASS", False: "FAIL"}
    print("\nsummary")
    print(
        f"  flat     {verdict[flat['ok']]}  first {flat['edge_s']:.0f} s"
        f" {flat['first_jobs_per_s']:,.0f} jobs/s, last {flat['last_jobs_per_s']:,.0f} jobs/s"
        f" ({flat['change']:+.1%}); backlog growth {flat['backlog_growth']:,.0f};"
        f" offered {flat['mean_offered_per_s']:,.0f}/s; worst p99 pickup"
        f" {flat['p99_pickup_ms_worst']:,.0f} ms"
    )
    if flat["offered_short"]:
        print("           WARNING: the enqueuer offered under 95% of --rate; verdicts at that load")
    print(
        f"  bounded  {verdict[bounded['ok']]}  hot table + indexes: first half max"
        f" {bounded['first_half_max_bytes'] / MB:,.1f} MB, second half max"
        f" {bounded['second_half_max_bytes'] / MB:,.1f} MB (x{bounded['ratio']:.2f});"
        f" second half growing {bounded['second_half_growth_mb_per_min']:+,.2f} MB/min"
    )
    for name, size in bounded["tables_max_bytes"].items():
        print(f"           {name:<28} max {size / MB:9.1f} MB (heap + indexes)")
    print(
        f"  held     {verdict[held['ok']]}  capacity {held['baseline_jobs_per_s']:,.0f} ->"
        f" {held['held_jobs_per_s']:,.0f} jobs/s ({held['capacity_ratio']:.0%}); steady"
        f" {held['hold_mean_jobs_per_s']:,.0f} jobs/s during the hold"
        f" ({held['hold_vs_steady']:.0%} of phase 1); hot table"
        f" {held['hot_bytes_at_hold_start'] / MB:,.1f} -> {held['hot_bytes_at_hold_end'] / MB:,.1f}"
        f" MB, {held['hot_dead_at_hold_end']:,} dead; holder xmin age"
        f" {held['holder_xmin_age_at_end']}"
    )
    if held["hold_offered_short"]:
        print(
            f"           WARNING: during the hold the enqueuer offered"
            f" {held['hold_mean_offered_per_s']:,.0f}/s, under 95% of --rate"
        )


# -- chart ----------------------------------------------------------------------------------


def chart(report: Report, path: Path) -> None:
    """Throughput, hot table size and dead tuples over time, phases shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rate_ax, size_ax, tuple_ax) = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    xs = [s["elapsed_s"] / 60 for s in report.samples]
    for phase, colour in (("steady", "tab:blue"), ("hold", "tab:red")):
        points = [(s["elapsed_s"] / 60, s) for s in report.samples if s["phase"] == phase]
        rate_ax.plot(
            [x for x, _ in points], [s["jobs_per_s"] for _, s in points], ".-", color=colour
        )
        rate_ax.plot(
            [x for x, _ in points], [s["offered_per_s"] for _, s in points], ":", color="grey"
        )
    for name, burst in report.bursts.items():
        rate_ax.hlines(
            burst["jobs_per_s"], burst["first_start_s"] / 60, burst["end_s"] / 60, colors="black"
        )
        rate_ax.annotate(
            f"{name} {burst['jobs_per_s']:,.0f}/s",
            (burst["end_s"] / 60, burst["jobs_per_s"]),
            fontsize=8,
        )
    rate_ax.set_ylabel("jobs/s (dotted: offered)")
    names = sorted({n for s in report.samples for n in s["tables"]})
    size_ax.plot(xs, [s["hot_bytes"] / MB for s in report.samples], ".-", label="pgqueue_jobs")
    for name in names:
        if name != HOT_TABLE:
            size_ax.plot(
                xs,
                [
                    (
                        s["tables"].get(name, {}).get("heap", 0)
                        + s["tables"].get(name, {}).get("indexes", 0)
                    )
                    / MB
                    for s in report.samples
                ],
                label=name,
                linewidth=0.8,
            )
    size_ax.set_yscale("symlog")
    size_ax.set_ylabel("heap + indexes, MB")
    size_ax.legend(fontsize=7)
    for key in ("live", "dead"):
        tuple_ax.plot(
            xs,
            [s["tables"].get(HOT_TABLE, {}).get(key, 0) for s in report.samples],
            ".-",
            label=f"{HOT_TABLE} {key}",
        )
    for event in report.vacuums:
        if event["table"] == HOT_TABLE:
            tuple_ax.axvline(event["at_s"] / 60, color="green", linewidth=0.5)
    tuple_ax.set_ylabel("tuples (green: stand-in vacuum)")
    tuple_ax.set_xlabel("minutes")
    tuple_ax.legend(fontsize=7)
    for ax in (rate_ax, size_ax, tuple_ax):
        for phase in report.phases:
            colour = "tab:blue" if phase["name"] == "steady" else "tab:red"
            ax.axvspan(phase["start_s"] / 60, phase["end_s"] / 60, color=colour, alpha=0.07)
        for burst in report.bursts.values():
            ax.axvspan(burst["start_s"] / 60, burst["end_s"] / 60, color="grey", alpha=0.2)
        ax.grid(alpha=0.3)
    rate_ax.set_title("pgqueue bloat: steady load (blue), snapshot held (red), bursts (grey)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main -----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 0.5 + 0.5 min")
    parser.add_argument("--minutes", type=float, help="steady phase (10; quick 0.5)")
    parser.add_argument("--hold-minutes", type=float, help="snapshot held (5; quick 0.5)")
    parser.add_argument("--rate", type=float, help="offered jobs/s (1,000; quick 300)")
    parser.add_argument("--burst", type=int, help="jobs per capacity burst (20,000; quick 2,000)")
    parser.add_argument("--sample", type=float, help="seconds per sample (10; quick 5)")
    parser.add_argument("--bursts", type=int, help="bursts per capacity figure (3; quick 1)")
    parser.add_argument("--concurrency", type=int, default=20, help="worker concurrency (20)")
    parser.add_argument(
        "--vacuum",
        choices=["auto", "server", "emulate"],
        default="auto",
        help="auto: the server's autovacuum, or a stand-in if it is off (default)",
    )
    parser.add_argument(
        "--naptime", type=float, help="stand-in's seconds between passes (server's; quick 10)"
    )
    parser.add_argument("--output", default=str(RESULTS / "bloat.json"))
    parser.add_argument("--chart", default=str(RESULTS / "bloat.png"), help="'' for none")
    parser.add_argument("--keep-log", action="store_true", help="keep the worker's log")
    args = parser.parse_args()
    full = {
        "minutes": 10.0,
        "hold_minutes": 5.0,
        "rate": 1_000.0,
        "burst": 20_000,
        "sample": 10.0,
        "bursts": 3,
    }
    quick = {
        "minutes": 0.5,
        "hold_minutes": 0.5,
        "rate": 300.0,
        "burst": 2_000,
        "sample": 5.0,
        "bursts": 1,
    }
    defaults = quick if args.quick else full
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.naptime is None and args.quick:
        args.naptime = 10.0
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # so the finally blocks stop the worker


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with (
            bench.fresh_database(bench.server_dsn()) as dsn,
            psycopg.connect(dsn, autocommit=True) as conn,
        ):
            settings = dict(
                conn.execute(
                    "SELECT name, setting FROM pg_settings WHERE name IN ('server_version',"
                    " 'fsync', 'synchronous_commit', 'autovacuum', 'autovacuum_naptime',"
                    " 'track_counts', 'shared_buffers')"
                ).fetchall()
            )
            autovacuum_on = settings["autovacuum"] == "on"
            args.vacuum_mode = (
                ("server" if autovacuum_on else "emulate") if args.vacuum == "auto" else args.vacuum
            )
            if args.naptime is None:
                args.naptime = float(settings["autovacuum_naptime"])
            run = Run(dsn, conn, args)
            run.report.machine = {
                "cores": os.cpu_count(),
                "load_average": os.getloadavg(),
                "python": platform.python_version(),
                "postgres": settings,
                "layout": run.jobs.every,
                "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            }
            run.report.settings = {k: v for k, v in vars(args).items() if k != "quick"}
            run.report.settings["quick"] = args.quick
            print("machine:", json.dumps(run.report.machine), flush=True)
            print(
                f"vacuum: server autovacuum {settings['autovacuum']}, so {args.vacuum_mode}"
                + (f" (a pass every {args.naptime:g} s)" if args.vacuum_mode == "emulate" else ""),
                flush=True,
            )
            if settings["track_counts"] != "on":
                print("WARNING: track_counts is off: no tuple counts, and no autovacuum")
            run.run()
    except (Exception, KeyboardInterrupt) as exc:
        traceback.print_exc()
        print(f"the run could not be made: {exc!r}", file=sys.stderr)
        return 2
    report = run.report
    report.summary = judge(report, args)
    print_summary(report.summary)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(asdict(report), indent=2))
    print(f"written to {output}")
    if args.chart:
        try:
            chart(report, Path(args.chart))
            print(f"chart in {args.chart}")
        except ImportError as exc:
            print(f"no chart: {exc}")
    ok = all(report.summary[key]["ok"] for key in ("flat", "bounded", "held"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
