"""The chaos run: worker processes run thousands of jobs while workers are killed with SIGKILL
and every database connection is cut; then it checks that no job was lost, that no
transactional job took effect twice, and that each killed worker's jobs were claimed again
within 5 seconds (`--rescue-limit`).

    make chaos                                                # 10,000 jobs, the full run
    make chaos CHAOS_ARGS="--jobs 300 --kills 2 --cuts 1"     # a smoke run
    benchmarks/chaos.py --workflows                           # the workflow run (make chaos too)

The workflow run enqueues chords (20 members whose callback gathers their results) and chains
(5 steps, each adding one to its parent's value) instead of single jobs, under the same kills
and cuts. It checks, besides the above, that every workflow ended SUCCEEDED, that every chord's
callback and every chain step took effect exactly once with the right value, and it reports
the time from a chord's last member's outcome to its callback's start (p50, p99).

The rescue time is a figure of the machine as much as of pgqueue: on a loaded machine it grows.
`--rescue-limit 0` still reports it and still fails a rescue that never happens, but does not
hold it to a limit; the test suite's smoke run uses that, and leaves the figure to this run.

It works in a fresh database of its own (created, then dropped) on the server pgqueue itself
would use: `--dsn`, else PGQUEUE_DSN, else DATABASE_URL, else the embedded development
database. The workers are real `pgqueue worker` processes running `chaos_tasks.py`, with
default settings.

The jobs are enqueued in equal batches, one just before each chaos action and the last one
after them all, and each action strikes at a random point while its batch is being worked
through: every kill and cut hits busy workers with jobs queued behind them, however fast the
machine. Before each action, the last kill's replacement must be ready, so every action hits
a full fleet; the victim of a kill is a random worker that is running jobs.

How it counts:

- jobs lost: jobs that did not end SUCCEEDED once everything was done;
- duplicate executions: execution records beyond the first for the same job. A transactional
  task writes its record in the job's own transaction, so it must never have two. A plain task
  writes it on a separate autocommit connection, so a job whose worker was killed after the
  record but before the job's outcome was written runs again: at least once, never lost. Its
  duplicates are bounded by the plain jobs in flight at the kills;
- jobs in flight at a kill: the jobs `running` under the killed worker's id once its process
  is gone (nothing but a rescue, seconds later, changes those rows), minus those whose own
  attempt still finished (a commit the process had already sent);
- rescue time of a kill: from the SIGKILL (the database's clock just before the signal) to the
  moment the last job in flight was claimed again by another worker (the new attempt's
  `started_at`).

Exit status: 0 if every requirement holds, 1 if one fails, 2 if the run could not be made.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import math
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import chaos_tasks
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb

import pgqueue
from pgqueue import _embedded, migrate
from pgqueue.config import resolve_dsn

HERE = Path(__file__).resolve().parent
RESCUE_LIMIT = 5.0  # seconds: the promise of issue 3, with default settings (--rescue-limit)
READY_TIMEOUT = 90.0  # a cold Python start on a busy 2-core machine can take a while
STALL_TIMEOUT = 120.0  # no job finished for this long: stop waiting
RESCUE_GIVE_UP = 120.0  # a job in flight not claimed again after this long was never rescued
RECOVERY_TIMEOUT = 60.0  # a worker not heartbeating this long after a cut did not come back
POLL = 0.05  # seconds between looks at the database while waiting for something
STRIKE_WINDOW = (0.1, 0.6)  # an action strikes when this share of its batch is done
CONTROLLER = "pgqueue-chaos"  # application_name of this script's own connections
FINISHED = ("succeeded", "failed", "cancelled")
_READY = re.compile(r"worker (?P<name>\S+) \(id (?P<id>\d+)\) ready")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return ChaosRun(args).run()
    except (SetupError, pgqueue.PgQueueError, psycopg.Error) as exc:
        print(f"chaos: could not run: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="chaos.py",
        description="Kill workers and cut connections while pgqueue runs jobs; check that no "
        "job is lost or takes effect twice, and that killed workers' jobs are rescued fast.",
    )
    parser.add_argument("--jobs", type=int, help="jobs to run (10000; not with --workflows)")
    parser.add_argument(
        "--workflows",
        action="store_true",
        help="run chords and chains instead of single jobs (--chords, --chains)",
    )
    parser.add_argument("--chords", type=int, default=200, help="with --workflows (200)")
    parser.add_argument("--chord-size", type=int, default=20, help="members per chord (20)")
    parser.add_argument("--chains", type=int, default=200, help="with --workflows (200)")
    parser.add_argument("--chain-length", type=int, default=5, help="steps per chain (5)")
    parser.add_argument("--workers", type=int, default=3, help="worker processes (3)")
    parser.add_argument("--kills", type=int, default=10, help="workers killed with SIGKILL (10)")
    parser.add_argument("--cuts", type=int, default=2, help="cuts of every connection (2)")
    parser.add_argument("--concurrency", type=int, default=10, help="per worker (10)")
    parser.add_argument(
        "--work-ms", default="1-5", help="each task's work, in ms: N, or A-B at random (1-5)"
    )
    parser.add_argument(
        "--min-gap", type=float, default=1.0, help="least seconds between chaos actions (1)"
    )
    parser.add_argument("--seed", type=int, help="random seed (default: random, printed)")
    parser.add_argument("--dsn", help="the server to use (default: as pgqueue resolves it)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up after (1800 s)")
    parser.add_argument("--keep-logs", action="store_true", help="keep worker logs on success")
    parser.add_argument(
        "--rescue-limit",
        type=float,
        default=RESCUE_LIMIT,
        help=f"fail if the slowest rescue takes this long or longer ({RESCUE_LIMIT:g} s); 0 "
        "reports it without a limit (a rescue that never happens still fails)",
    )
    args = parser.parse_args(argv)
    try:
        low, _, high = args.work_ms.partition("-")
        args.work_range = (float(low), float(high or low))
    except ValueError:
        parser.error(f"--work-ms takes N or A-B in milliseconds, not {args.work_ms!r}")
    if not 0 <= args.work_range[0] <= args.work_range[1]:
        parser.error("--work-ms: need 0 <= A <= B")
    if args.workflows:
        if args.jobs is not None:
            parser.error("--workflows counts its jobs from --chords and --chains, not --jobs")
        for name in ("chords", "chains"):
            if getattr(args, name) < 0:
                parser.error(f"--{name} cannot be negative")
        for name in ("chord_size", "chain_length"):
            if getattr(args, name) < 1:
                parser.error(f"--{name.replace('_', '-')} must be at least 1")
        args.jobs = args.chords * (args.chord_size + 1) + args.chains * args.chain_length
    elif args.jobs is None:
        args.jobs = 10_000
    for name in ("jobs", "workers", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.rescue_limit < 0:
        parser.error("--rescue-limit cannot be negative")
    if args.kills < 0 or args.cuts < 0:
        parser.error("--kills and --cuts cannot be negative")
    if args.kills and args.workers < 2:
        parser.error("killing workers needs --workers 2 or more: someone must rescue")
    units = args.chords + args.chains if args.workflows else args.jobs
    if units < 2 * (args.kills + args.cuts + 1):
        parser.error("too few jobs or workflows for that many kills and cuts")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1_000_000)
    return args


class SetupError(Exception):
    """The run could not be made (as opposed to a requirement that failed)."""


def connect(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True, application_name=CONTROLLER)


def clock() -> str:
    return dt.datetime.now().strftime("%H:%M:%S.%f")[:-3]


# -- worker processes -------------------------------------------------------------------------


class WorkerProcess:
    """One `pgqueue worker --app chaos_tasks:app` process, its output in a log file."""

    def __init__(self, number: int, dsn: str, log_dir: Path, concurrency: int) -> None:
        self.name = f"chaos-{number}"
        self.log_path = log_dir / f"{self.name}.log"
        command = [sys.executable, "-m", "pgqueue", "worker", "--app", "chaos_tasks:app"]
        command += ["--concurrency", str(concurrency), "--name", self.name]
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("PGQUEUE_") and key != "DATABASE_URL"
        }
        env.update(PGQUEUE_DSN=dsn, PYTHONUNBUFFERED="1")
        self._log: IO[bytes] = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command,
            cwd=HERE,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal is for this script alone
        )
        self.worker_id: int | None = None
        self.killed = False
        self.died = False  # exited without being killed by this script

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_ready(self) -> bool:
        """Whether the worker logged its ready line, which gives its id."""
        if self.worker_id is None:
            match = _READY.search(self.log_path.read_text(errors="replace"))
            if match:
                self.worker_id = int(match["id"])
        return self.worker_id is not None and self.process.poll() is None

    def kill(self) -> None:
        self.killed = True
        os.kill(self.pid, signal.SIGKILL)
        self.process.wait()

    def log_tail(self, lines: int = 5) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()[-lines:]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


# -- what happened ----------------------------------------------------------------------------


@dataclasses.dataclass
class Kill:
    """One SIGKILL, and the rescue of the jobs its worker had in flight."""

    number: int
    worker_name: str
    worker_id: int
    killed_at: dt.datetime  # the database's clock, just before the signal
    running_before: int  # jobs running under the worker's id just before the signal
    running_after: int  # the same, once the process was gone
    # Job id -> attempt, for the jobs running under the worker's id: read again until the
    # rescue deletes the worker's row, so it ends as exactly the jobs the rescue took back
    # (statements the process sent just before it died may still land after the signal).
    held: dict[int, int]
    plain: set[int]  # the held jobs of the plain task
    rescued: bool = False  # the worker's row is gone: `held` is final
    requeued: dict[int, dt.datetime] = dataclasses.field(default_factory=dict)
    reclaimed: dict[int, dt.datetime] = dataclasses.field(default_factory=dict)
    ended: set[int] = dataclasses.field(default_factory=set)  # finished, never claimed again
    gave_up: bool = False

    @property
    def resolved(self) -> bool:
        if self.gave_up:
            return True
        return self.rescued and len(self.reclaimed) + len(self.ended) == len(self.held)

    @property
    def rescue_seconds(self) -> float | None:
        """SIGKILL to the last job in flight claimed again; None if none; inf if never."""
        if self.gave_up:
            return math.inf
        if not self.reclaimed:
            return None
        return max((at - self.killed_at).total_seconds() for at in self.reclaimed.values())

    @property
    def requeue_seconds(self) -> float | None:
        """SIGKILL to the last job in flight seen back in the queue (or claimed, if sooner)."""
        if self.gave_up or not self.reclaimed:
            return None
        seen = [min(self.requeued.get(job, at), at) for job, at in self.reclaimed.items()]
        return max((at - self.killed_at).total_seconds() for at in seen)


@dataclasses.dataclass
class Cut:
    """One pg_terminate_backend of every backend of the chaos database but this script's."""

    number: int
    cut_at: dt.datetime
    terminated: int
    running: int
    live_pids: list[int]
    recovered_seconds: float | None = None  # until every live worker heartbeated again


HELD_BY = """
SELECT w.present, j.id, j.attempts, j.task_name
FROM (SELECT EXISTS (SELECT 1 FROM pgqueue_workers WHERE id = %(id)s) AS present) AS w
LEFT JOIN pgqueue_jobs AS j ON j.worker_id = %(id)s AND j.status = 'running'
"""


class RescueTracker(threading.Thread):
    """Follows each killed worker's jobs: what it held until its rescue, then each job until
    it is claimed again (a claim bumps the attempt, the job's fencing token)."""

    def __init__(self, dsn: str) -> None:
        super().__init__(name="rescue-tracker", daemon=True)
        self.conn = connect(dsn)
        self.lock = threading.Lock()
        self.kills: list[Kill] = []
        self.stop = threading.Event()

    def add(self, kill: Kill) -> None:
        with self.lock:
            self.kills.append(kill)

    def all_resolved(self) -> bool:
        with self.lock:
            return all(kill.resolved for kill in self.kills)

    def run(self) -> None:
        while not self.stop.wait(POLL):
            with self.lock:
                pending = [kill for kill in self.kills if not kill.resolved]
            for kill in pending:
                if not kill.rescued:
                    self._read_held(kill)
            if pending:
                self._follow([kill for kill in pending if kill.rescued])

    def _read_held(self, kill: Kill) -> None:
        rows = self.conn.execute(HELD_BY, {"id": kill.worker_id}).fetchall()
        with self.lock:
            if rows[0][0]:  # one snapshot: the row is there, so these jobs are still its own
                jobs = [(r[1], r[2], r[3]) for r in rows if r[1] is not None]
                kill.held = {job_id: attempt for job_id, attempt, _ in jobs}
                kill.plain = {job_id for job_id, _, name in jobs if name == chaos_tasks.plain.name}
            else:
                kill.rescued = True

    def _follow(self, kills: list[Kill]) -> None:
        ids = sorted({job for kill in kills for job in kill.held})
        rows = self.conn.execute(
            "SELECT id, status::text, attempts, started_at, clock_timestamp() "
            "FROM pgqueue_all_jobs WHERE id = ANY(%s)",
            (ids,),
        ).fetchall()
        now = self.conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        with self.lock:
            for kill in kills:
                for job_id, status, attempts, started_at, seen_at in rows:
                    attempt = kill.held.get(job_id)
                    if attempt is None or job_id in kill.reclaimed:
                        continue
                    if attempts > attempt:
                        kill.reclaimed[job_id] = started_at
                    elif status == "queued":
                        kill.requeued.setdefault(job_id, seen_at)
                    elif status in FINISHED:
                        kill.ended.add(job_id)
                if not kill.resolved:
                    kill.gave_up = (now - kill.killed_at).total_seconds() > RESCUE_GIVE_UP


@dataclasses.dataclass
class Unit:
    """What one enqueue makes: a single job of the task `kind`, or a "chord" or a "chain"; and
    the work in ms of each of its jobs that works."""

    kind: Any
    works: list[float]


# Per kind of workflow: how many, how many SUCCEEDED in every step, how many whose last step
# returned what it must, how many whose last step left exactly one execution record; then per
# dependent step (a chord's callback; each chain step but the head): the delay in seconds from
# its (last) parent's outcome to the step's first start (the first attempt's: one lost to a
# kill or a cut is in the history); and, for the steps that ran once (a retry or a rescue sets
# run_at again), whether the very transaction that wrote the parent's outcome released it (its
# run_at, set to now() on release, equals that parent's finished_at, now() of the transaction
# that ended it) and how long it then waited in the queue behind jobs ready before it.
WORKFLOW_FIGURES = """
WITH step AS (
    SELECT w.workflow_id, w.kind, w.expected, s.ord, cardinality(w.steps) AS size, j.status,
        j.result, j.run_at, j.finished_at, j.history IS NULL AS one_attempt,
        COALESCE((j.history -> 0 ->> 'started_at')::timestamptz, j.started_at) AS first_start,
        (SELECT count(*) FROM chaos_effects AS e WHERE e.job_id = j.id) AS effects
    FROM chaos_workflows AS w
    CROSS JOIN LATERAL unnest(w.steps) WITH ORDINALITY AS s(id, ord)
    JOIN pgqueue_all_jobs AS j ON j.id = s.id
), flow AS (
    SELECT workflow_id, kind, bool_and(status = 'succeeded') AS succeeded,
        bool_or(ord = size AND result = expected) AS right_value,
        bool_or(ord = size AND effects = 1) AS once
    FROM step GROUP BY workflow_id, kind
), dependent AS (
    -- A chain step and its parent (the step before it).
    SELECT b.kind, CASE WHEN b.one_attempt THEN b.run_at = a.finished_at END AS same_transaction,
        b.first_start - a.finished_at AS delay,
        CASE WHEN b.one_attempt THEN b.first_start - b.run_at END AS queued
    FROM step AS a JOIN step AS b ON b.workflow_id = a.workflow_id AND b.ord = a.ord + 1
    WHERE a.kind = 'chain'
    UNION ALL
    -- A chord's callback and its members: the one whose outcome released it, the last one.
    SELECT 'chord', CASE WHEN c.one_attempt THEN c.run_at = ANY(array_agg(m.finished_at)) END,
        c.first_start - max(m.finished_at),
        CASE WHEN c.one_attempt THEN c.first_start - c.run_at END
    FROM step AS c JOIN step AS m ON m.workflow_id = c.workflow_id AND m.ord < c.ord
    WHERE c.kind = 'chord' AND c.ord = c.size
    GROUP BY c.workflow_id, c.run_at, c.first_start, c.one_attempt
), timing AS (
    SELECT kind, count(*) FILTER (WHERE same_transaction) AS same_transaction,
        count(same_transaction) AS single,
        array_agg(extract(epoch FROM delay)) FILTER (WHERE delay IS NOT NULL) AS delays,
        array_agg(extract(epoch FROM queued)) FILTER (WHERE queued IS NOT NULL) AS queued
    FROM dependent GROUP BY kind
)
SELECT f.kind, count(*), count(*) FILTER (WHERE f.succeeded),
    count(*) FILTER (WHERE f.right_value), count(*) FILTER (WHERE f.once),
    min(t.same_transaction), min(t.single), min(t.delays), min(t.queued)
FROM flow AS f LEFT JOIN timing AS t ON t.kind = f.kind
GROUP BY f.kind ORDER BY f.kind
"""


def spread(ordered: list[float]) -> str:
    """p50, p99 and max of sorted durations in seconds, in ms."""
    if not ordered:
        return "n/a"
    return (
        f"p50 {percentile(ordered, 50) * 1000:.1f} ms, p99 {percentile(ordered, 99) * 1000:.1f} "
        f"ms, max {ordered[-1] * 1000:.1f} ms"
    )


def percentile(ordered: list[float], p: float) -> float:
    """The p-th percentile of sorted values (nearest rank)."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# -- the run ----------------------------------------------------------------------------------


class ChaosRun:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.workers: list[WorkerProcess] = []
        self.kills: list[Kill] = []
        self.cuts: list[Cut] = []
        self.enqueued = 0
        self.last_action = 0.0
        self._numbers = iter(range(1, 1_000_000))

    def run(self) -> int:
        self.server_dsn, source = self._server()
        self.db_name = f"pgqueue_chaos_{os.getpid()}"
        self.dsn = make_conninfo(self.server_dsn, dbname=self.db_name)
        with connect(self.server_dsn) as admin:
            row = admin.execute("SHOW server_version").fetchone()
            self.pg_version = row[0] if row else "?"
            admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{self.db_name}"')
        self.log_dir = Path(tempfile.mkdtemp(prefix="pgqueue-chaos-"))
        passed = False
        tracker: RescueTracker | None = None
        try:
            migrate.upgrade(self.dsn)
            self.conn = connect(self.dsn)
            self.conn.execute(chaos_tasks.TABLES_DDL)
            self.tracker = tracker = RescueTracker(self.dsn)
            self._print_header(source)
            tracker.start()
            passed = self._chaos()
        finally:
            if tracker is not None:
                tracker.stop.set()
            for worker in self.workers:
                worker.close()
            with contextlib.suppress(psycopg.Error), connect(self.server_dsn) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            if passed and not self.args.keep_logs:
                shutil.rmtree(self.log_dir, ignore_errors=True)
            else:
                print(f"worker logs: {self.log_dir}")
        return 0 if passed else 1

    def _server(self) -> tuple[str, str]:
        """pgqueue's own choice of server, and where it came from."""
        if self.args.dsn:
            return resolve_dsn(self.args.dsn) or self.args.dsn, "--dsn"
        dsn = resolve_dsn(None)
        if dsn is not None:
            return dsn, "PGQUEUE_DSN" if os.environ.get("PGQUEUE_DSN") else "DATABASE_URL"
        return _embedded.embedded_dsn(), "the embedded development database"

    def _print_header(self, source: str) -> None:
        args = self.args
        low, high = args.work_range
        actions = args.kills + args.cuts
        limit = f" --rescue-limit {args.rescue_limit:g}"
        if args.rescue_limit == RESCUE_LIMIT:
            limit = ""
        print("pgqueue chaos run")
        print(f"  date:       {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC")
        print(f"  machine:    {machine()}")
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"  load:       {load} (1, 5, 15 min averages), CPU {cpu_idle()} idle just before")
        print(
            f"  software:   pgqueue {pgqueue.__version__}, Python {platform.python_version()}, "
            f"PostgreSQL {self.pg_version}"
        )
        print(f"  pgqueue:    {provenance()}")
        print(f"  database:   {self.db_name} on {describe_dsn(self.server_dsn)} ({source})")
        if args.workflows:
            shape = (
                f"--workflows --chords {args.chords} --chord-size {args.chord_size} "
                f"--chains {args.chains} --chain-length {args.chain_length}"
            )
            workload = (
                f"{args.chords} chords of {args.chord_size} chaos.transactional members and a "
                f"chaos.gather callback, {args.chains} chains of {args.chain_length} chaos.add "
                f"steps ({args.jobs} jobs, all transactional=True), in random order, in "
                f"{actions + 1} batches; each member and step works {low:g}-{high:g} ms; "
                f"max_attempts {chaos_tasks.MAX_ATTEMPTS}"
            )
        else:
            shape = f"--jobs {args.jobs}"
            workload = (
                f"{args.jobs} jobs in {actions + 1} batches, half chaos.transactional "
                f"(transactional=True), half chaos.plain, in random order; each works "
                f"{low:g}-{high:g} ms; max_attempts {chaos_tasks.MAX_ATTEMPTS}"
            )
        print(
            f"  command:    benchmarks/chaos.py {shape} --workers {args.workers} "
            f"--kills {args.kills} --cuts {args.cuts} --concurrency {args.concurrency} "
            f"--work-ms {args.work_ms} --min-gap {args.min_gap:g} --seed {args.seed}{limit}"
        )
        print(f"  workload:   {workload}")
        print(
            f"  workers:    {args.workers} x `pgqueue worker --concurrency {args.concurrency}`, "
            "default settings (heartbeat 1 s, lock grace 2 s, rescue pass 1 s)"
        )
        sys.stdout.flush()

    # -- the chaos itself -----------------------------------------------------------------

    def _chaos(self) -> bool:
        args = self.args
        started = time.monotonic()
        self.deadline = started + args.timeout
        for _ in range(args.workers):
            self._start_worker()
        self._wait(self._fleet_ready, READY_TIMEOUT, "the workers to be ready")
        self._say(f"{args.workers} workers ready")
        actions = ["kill"] * args.kills + ["cut"] * args.cuts
        self.rng.shuffle(actions)
        batches = self._batches(len(actions) + 1)
        for action, batch in zip(actions, batches[:-1], strict=True):
            self._wait_for_turn()
            self._wait_into_batch(self._enqueue(batch))
            if action == "kill":
                self._kill()
            else:
                self._cut()
            self.last_action = time.monotonic()
        self._wait_for_turn()
        self._enqueue(batches[-1])
        self._wait_until_done()
        self._say("every job finished; checking that every rescue was measured")
        self._wait(self.tracker.all_resolved, RESCUE_GIVE_UP + 10, "the rescues to resolve")
        self.tracker.stop.set()
        # A worker still starting has no signal handler yet: let it get ready first.
        self._wait(self._fleet_ready, READY_TIMEOUT, "the replacement workers to be ready")
        exit_codes = self._stop_workers()
        self.elapsed = time.monotonic() - started
        return self._report(exit_codes)

    def _say(self, text: str) -> None:
        print(f"[{clock()}] {text}", flush=True)

    def _start_worker(self) -> WorkerProcess:
        worker = WorkerProcess(next(self._numbers), self.dsn, self.log_dir, self.args.concurrency)
        self.workers.append(worker)
        return worker

    def _live(self) -> list[WorkerProcess]:
        return [w for w in self.workers if not (w.killed or w.died)]

    def _fleet_ready(self) -> bool:
        self._check_workers()
        return all(worker.is_ready() for worker in self._live())

    def _check_workers(self) -> None:
        """A worker that exits on its own (not killed here) fails the run; it is replaced."""
        for worker in self._live():
            if worker.process.poll() is not None:
                worker.died = True
                self._say(
                    f"!! {worker.name} (pid {worker.pid}) exited on its own with code "
                    f"{worker.process.returncode}; its log ends with:"
                )
                for line in worker.log_tail():
                    print(f"     {line}")
                if sum(w.died for w in self.workers) > 2 * self.args.workers:
                    raise SetupError("workers keep exiting on their own; see their logs")
                self._start_worker()

    def _wait(self, condition: Callable[[], Any], timeout: float, what: str) -> None:
        deadline = min(time.monotonic() + timeout, self.deadline)
        while not condition():
            if time.monotonic() > deadline:
                raise SetupError(f"timed out waiting for {what}")
            time.sleep(POLL)  # polling interval of a deadline-bound wait

    def _batches(self, count: int) -> list[list[Unit]]:
        """What to enqueue, shuffled, in `count` parts: single jobs (exactly half
        transactional) or, with --workflows, chords and chains; each with its work in ms."""
        args = self.args
        kinds: list[Any]
        if args.workflows:
            kinds = ["chord"] * args.chords + ["chain"] * args.chains
        else:
            half = args.jobs // 2
            kinds = [chaos_tasks.transactional] * half + [chaos_tasks.plain] * (args.jobs - half)
        self.rng.shuffle(kinds)
        units = [Unit(kind, self._works(kind)) for kind in kinds]
        bounds = [round(i * len(units) / count) for i in range(count + 1)]
        return [units[bounds[i] : bounds[i + 1]] for i in range(count)]

    def _works(self, kind: Any) -> list[float]:
        """The work in ms of each job of a unit that does work (a chord's callback does not)."""
        size = {"chord": self.args.chord_size, "chain": self.args.chain_length}.get(kind, 1)
        low, high = self.args.work_range
        return [round(self.rng.uniform(low, high), 2) for _ in range(size)]

    def _enqueue(self, batch: list[Unit]) -> int:
        """One transaction through the public API (apply_async on this connection); returns
        how many jobs it enqueued."""
        before = self.enqueued
        with self.conn.transaction():
            for unit in batch:
                if unit.kind == "chord":
                    self._enqueue_chord(unit.works)
                elif unit.kind == "chain":
                    self._enqueue_chain(unit.works)
                else:
                    unit.kind.apply_async(args=(self.enqueued, unit.works[0]), connection=self.conn)
                    self.enqueued += 1
        if not hasattr(self, "first_enqueued_at"):
            self.first_enqueued_at = self._db_now()
        return self.enqueued - before

    def _enqueue_chord(self, works: list[float]) -> None:
        members = [chaos_tasks.transactional.s(self.enqueued + i, w) for i, w in enumerate(works)]
        expected = [self.enqueued + i for i in range(len(works))]
        flow = pgqueue.chord(members, chaos_tasks.gather.s()).apply_async(connection=self.conn)
        self._record_workflow(flow, "chord", expected)

    def _enqueue_chain(self, works: list[float]) -> None:
        head, *rest = works
        steps = [chaos_tasks.add.s(0, head), *(chaos_tasks.add.s(w) for w in rest)]
        flow = pgqueue.chain(*steps).apply_async(connection=self.conn)
        self._record_workflow(flow, "chain", len(works))

    def _record_workflow(self, flow: pgqueue.Workflow, kind: str, expected: Any) -> None:
        steps = [job.id for job in flow.jobs]
        self.conn.execute(
            "INSERT INTO chaos_workflows (workflow_id, kind, steps, expected) "
            "VALUES (%s, %s, %s, %s)",
            (flow.id, kind, steps, Jsonb(expected)),
        )
        self.enqueued += len(steps)

    def _db_now(self) -> dt.datetime:
        row = self.conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        return row[0]  # type: ignore[no-any-return]

    def _progress(self) -> tuple[int, int]:
        """(finished jobs, running jobs)."""
        row = self.conn.execute(
            "SELECT count(*) FILTER (WHERE status IN ('succeeded', 'failed', 'cancelled')), "
            "count(*) FILTER (WHERE status = 'running') FROM pgqueue_all_jobs"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def _wait_for_turn(self) -> None:
        """Until the last action is `--min-gap` old and the whole fleet is ready (the last
        kill's replacement included)."""

        def turn() -> bool:
            return time.monotonic() - self.last_action >= self.args.min_gap and self._fleet_ready()

        self._wait(turn, READY_TIMEOUT, "the fleet to be ready for the next action")

    def _wait_into_batch(self, size: int) -> None:
        """Until a random share of the batch just enqueued is done: the workers are busy."""
        strike_at = self.enqueued - size + math.ceil(self.rng.uniform(*STRIKE_WINDOW) * size)
        self._wait(lambda: self._progress()[0] >= strike_at, STALL_TIMEOUT, "the batch to run")

    def _held(self, worker_id: int) -> list[tuple[int, int, str]]:
        rows = self.conn.execute(
            "SELECT id, attempts, task_name FROM pgqueue_all_jobs "
            "WHERE worker_id = %s AND status = 'running'",
            (worker_id,),
        ).fetchall()
        return [(int(r[0]), int(r[1]), str(r[2])) for r in rows]

    def _kill(self) -> None:
        ready = [w for w in self._live() if w.is_ready()]
        busy = [w for w in ready if w.worker_id is not None and self._held(w.worker_id)]
        victim = self.rng.choice(busy or ready)
        assert victim.worker_id is not None
        before = self._held(victim.worker_id)
        killed_at = self._db_now()
        victim.kill()
        after = self._held(victim.worker_id)
        kill = Kill(
            number=len(self.kills) + 1,
            worker_name=victim.name,
            worker_id=victim.worker_id,
            killed_at=killed_at,
            running_before=len(before),
            running_after=len(after),
            held={job_id: attempt for job_id, attempt, _ in after},
            plain={job_id for job_id, _, name in after if name == chaos_tasks.plain.name},
        )
        self.kills.append(kill)
        self.tracker.add(kill)
        replacement = self._start_worker()
        finished, _ = self._progress()
        self._say(
            f"kill {kill.number}/{self.args.kills}: SIGKILL {victim.name} (id {victim.worker_id},"
            f" pid {victim.pid}) running {len(before)} job(s); "
            f"{finished}/{self.enqueued} enqueued jobs done; {replacement.name} starting"
        )

    def _cut(self) -> None:
        own = [self.conn.info.backend_pid, self.tracker.conn.info.backend_pid]
        live_pids = [w.pid for w in self._live() if w.process.poll() is None]
        _, running = self._progress()
        row = self.conn.execute(
            "SELECT clock_timestamp(), count(*) FILTER (WHERE pg_terminate_backend(pid)) "
            "FROM pg_stat_activity "
            "WHERE datname = current_database() AND backend_type = 'client backend' "
            "AND pid <> ALL(%s)",
            (own,),
        ).fetchone()
        assert row is not None
        cut = Cut(len(self.cuts) + 1, row[0], int(row[1]), running, live_pids)
        self.cuts.append(cut)
        finished, _ = self._progress()
        self._say(
            f"cut {cut.number}/{self.args.cuts}: pg_terminate_backend on {cut.terminated} "
            f"backend(s) of {self.db_name} (all but this script's), {running} job(s) running; "
            f"{finished}/{self.enqueued} enqueued jobs done"
        )
        self._wait_for_recovery(cut)

    def _wait_for_recovery(self, cut: Cut) -> None:
        """Until every worker alive at the cut has sent a heartbeat since."""
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        while time.monotonic() < deadline:
            row = self.conn.execute(
                "SELECT count(DISTINCT pid), max(heartbeat_at) FROM pgqueue_workers "
                "WHERE pid = ANY(%s) AND heartbeat_at > %s",
                (cut.live_pids, cut.cut_at),
            ).fetchone()
            assert row is not None
            if row[0] >= len(cut.live_pids):
                cut.recovered_seconds = (row[1] - cut.cut_at).total_seconds()
                self._say(
                    f"cut {cut.number}: all {len(cut.live_pids)} workers heartbeating again "
                    f"{cut.recovered_seconds:.2f} s after the cut"
                )
                return
            time.sleep(POLL)  # polling interval of a deadline-bound wait
        self._say(f"!! cut {cut.number}: not every worker came back within {RECOVERY_TIMEOUT} s")

    def _wait_until_done(self) -> None:
        last, last_change = -1, time.monotonic()
        while True:
            self._check_workers()
            finished, _ = self._progress()
            if finished >= self.args.jobs:
                return
            if finished != last:
                last, last_change = finished, time.monotonic()
            if time.monotonic() - last_change > STALL_TIMEOUT:
                self._say(f"!! no job finished for {STALL_TIMEOUT:g} s; stopping")
                return
            if time.monotonic() > self.deadline:
                self._say("!! --timeout reached; stopping")
                return
            time.sleep(POLL)  # polling interval of a deadline-bound wait

    def _stop_workers(self) -> dict[str, int | None]:
        """SIGTERM (a warm shutdown) to every live worker; their exit codes."""
        live = [w for w in self._live() if w.process.poll() is None]
        for worker in live:
            worker.process.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for worker in live:
            try:
                codes[worker.name] = worker.process.wait(60)
            except subprocess.TimeoutExpired:
                codes[worker.name] = None
        return codes

    # -- results --------------------------------------------------------------------------

    def _report(self, exit_codes: dict[str, int | None]) -> bool:
        args = self.args
        figures = self._figures()
        rescues = [k.rescue_seconds for k in self.kills if k.rescue_seconds is not None]
        slowest = max(rescues) if rescues else None
        plain_bound = sum(len(k.plain) for k in self.kills)
        in_flight = sum(len(k.held) for k in self.kills)
        plain_held = {job for k in self.kills for job in k.plain}
        outside = len(figures["plain_dup_jobs"] - plain_held)
        lost = figures["enqueued"] - figures["succeeded"]
        logs = scan_logs(self.log_dir)

        print()
        print(
            "kills (in flight: what the rescue took back; rescue time: from the SIGKILL until "
            "the last of them was claimed again)"
        )
        for kill in self.kills:
            text = (
                f"  kill {kill.number:>2}: {kill.worker_name:>9} (id {kill.worker_id:>2}) "
                f"running {kill.running_before:>2} just before the signal, "
                f"{kill.running_after:>2} after; {len(kill.held):>2} in flight "
                f"({len(kill.plain):>2} plain)"
            )
            rescue, back = kill.rescue_seconds, kill.requeue_seconds
            if rescue == math.inf:
                text += "; NOT claimed again"
            elif rescue is not None and back is not None:
                text += (
                    f"; back in the queue after {back:.2f} s, claimed again after {rescue:.2f} s"
                )
            if kill.ended:
                text += f"; {len(kill.ended)} ended without a new claim"
            print(text)
        print("connection cuts")
        for cut in self.cuts:
            recovery = (
                f"every worker heartbeating again {cut.recovered_seconds:.2f} s after"
                if cut.recovered_seconds is not None
                else "NOT every worker came back"
            )
            print(
                f"  cut {cut.number}: {cut.terminated} backends terminated, "
                f"{cut.running} job(s) running; {recovery}"
            )
        print("from the workers' logs")
        for label, lines in logs.items():
            print(f"  {label}: {len(lines)}")
        for line in logs["tracebacks or critical errors"][:5]:
            print(f"     {line}")
        codes = ", ".join(f"{name} {code}" for name, code in exit_codes.items())
        print(f"  exit codes after the final SIGTERM: {codes}")

        duration = figures["duration"]
        print()
        print("results")
        print(
            f"  elapsed: {self.elapsed:.1f} s in all; from the first enqueue to the last job "
            f"done {duration:.1f} s ({figures['enqueued'] / duration:.0f} jobs/s, pauses for "
            "replacements to start included)"
        )
        print(f"  jobs enqueued: {figures['enqueued']}")
        print(f"  jobs succeeded: {figures['succeeded']}")
        by_status = ", ".join(f"{n} {s}" for s, n in figures["not_succeeded"])
        print(f"  jobs lost: {lost}" + (f" ({by_status})" if by_status else ""))
        print(
            f"  jobs run more than once: {figures['retried']} (most attempts for one job: "
            f"{figures['max_attempts']})"
        )
        print(f"  duplicate executions, transactional tasks: {figures['tx_dups']} (must be 0)")
        print(
            f"  duplicate executions, plain tasks: {figures['plain_dups']} (at most "
            f"{plain_bound}: the plain jobs in flight at the kills; {outside} outside them)"
        )
        print(f"  jobs in flight at the kills: {in_flight} (both kinds)")
        slowest_text = f"{slowest:.2f} s" if slowest is not None else "n/a (nothing in flight)"
        limit_text = (
            f"must be under {args.rescue_limit:g} s"
            if args.rescue_limit
            else "reported, not checked: --rescue-limit 0"
        )
        print(f"  slowest rescue: {slowest_text} ({limit_text})")
        flows = self._workflow_figures() if args.workflows else None
        if flows is not None:
            self._report_workflows(flows)
        print(f"  kills: {len(self.kills)} (at least {args.kills})")
        print(f"  connection cuts: {len(self.cuts)} (at least {args.cuts})")

        failures = []
        if lost:
            failures.append(f"{lost} job(s) lost")
        if figures["missing"]:
            failures.append(f"{figures['missing']} succeeded job(s) without an execution record")
        if figures["tx_dups"]:
            failures.append(f"{figures['tx_dups']} duplicate transactional execution(s)")
        if figures["plain_dups"] > plain_bound:
            failures.append(f"{figures['plain_dups']} plain duplicates > {plain_bound} in flight")
        if any(kill.gave_up for kill in self.kills):
            failures.append(f"a killed worker's job not claimed again in {RESCUE_GIVE_UP:g} s")
        elif args.rescue_limit and slowest is not None and slowest >= args.rescue_limit:
            failures.append(f"slowest rescue {slowest:.2f} s >= {args.rescue_limit:g} s")
        if flows is not None:
            failures += flows["failures"]
        if len(self.kills) < args.kills or len(self.cuts) < args.cuts:
            failures.append("fewer kills or cuts than asked for")
        if any(cut.recovered_seconds is None for cut in self.cuts):
            failures.append("a worker did not come back after a cut")
        if any(w.died for w in self.workers):
            failures.append("a worker exited on its own")
        if any(code != 0 for code in exit_codes.values()):
            failures.append("a worker did not stop cleanly on SIGTERM")
        print()
        print("RESULT: " + ("FAIL: " + "; ".join(failures) if failures else "PASS"))
        return not failures

    def _figures(self) -> dict[str, Any]:
        conn = self.conn
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded'), "
            "count(*) FILTER (WHERE attempts > 1), max(attempts), max(finished_at) "
            "FROM pgqueue_all_jobs"
        ).fetchone()
        assert row is not None
        enqueued, succeeded, retried, max_attempts, last_finished = row
        not_succeeded = conn.execute(
            "SELECT status::text, count(*) FROM pgqueue_all_jobs WHERE status <> 'succeeded' "
            "GROUP BY 1 ORDER BY 1"
        ).fetchall()
        transactional = [
            t.name for t in (chaos_tasks.transactional, chaos_tasks.gather, chaos_tasks.add)
        ]
        tx_dups, tx_missing = self._duplicates("chaos_effects", transactional)
        plain_dups, plain_missing = self._duplicates("chaos_executions", [chaos_tasks.plain.name])
        plain_dup_jobs = {
            int(r[0])
            for r in conn.execute(
                "SELECT job_id FROM chaos_executions GROUP BY job_id HAVING count(*) > 1"
            ).fetchall()
        }
        duration = (
            (last_finished - self.first_enqueued_at).total_seconds() if last_finished else 0.0
        )
        return {
            "enqueued": int(enqueued),
            "succeeded": int(succeeded),
            "retried": int(retried),
            "max_attempts": max_attempts,
            "not_succeeded": not_succeeded,
            "tx_dups": tx_dups,
            "plain_dups": plain_dups,
            "missing": tx_missing + plain_missing,
            "plain_dup_jobs": plain_dup_jobs,
            "duration": max(duration, 1e-9),
        }

    def _workflow_figures(self) -> dict[str, Any]:
        """Per kind of workflow: how many ended SUCCEEDED, how many last steps (a chord's
        callback, a chain's last step) took effect exactly once with the right value; and the
        delays from a parent's outcome to its dependent's first start."""
        rows = self.conn.execute(WORKFLOW_FIGURES).fetchall()
        figures: dict[str, Any] = {"failures": []}
        for kind, total, succeeded, right, once, same, single, delays, queued in rows:
            figures[kind] = {
                "total": int(total),
                "succeeded": int(succeeded),
                "right": int(right),
                "once": int(once),
                "same_transaction": int(same or 0),
                "single": int(single or 0),
                "delays": sorted(float(d) for d in delays or []),
                "queued": sorted(float(d) for d in queued or []),
            }
            if succeeded < total:
                figures["failures"].append(f"{total - succeeded} {kind}(s) did not succeed")
            if right < total:
                figures["failures"].append(f"{total - right} {kind}(s) ended with a wrong value")
            if once < total:
                figures["failures"].append(
                    f"{total - once} {kind}(s) whose last step did not take effect exactly once"
                )
            late = figures[kind]["single"] - figures[kind]["same_transaction"]
            if late:
                figures["failures"].append(
                    f"{late} {kind} step(s) not released in the transaction of their parent's "
                    "outcome"
                )
        return figures

    def _report_workflows(self, flows: dict[str, Any]) -> None:
        args = self.args
        shapes = {
            "chord": (args.chords, f"{args.chord_size} members", "callbacks"),
            "chain": (args.chains, f"{args.chain_length} steps", "last steps"),
        }
        for kind, (asked, shape, last) in shapes.items():
            got = flows.get(kind, {"total": 0, "succeeded": 0, "right": 0, "once": 0})
            print(
                f"  {kind}s of {shape}: {got['total']} (asked {asked}), {got['succeeded']} "
                f"SUCCEEDED; {last} that took effect exactly once: {got['once']}; with the "
                f"right value: {got['right']}"
            )
        labels = {
            "chord": ("callbacks", "a chord's last member's outcome -> its callback's start"),
            "chain": ("chain steps", "a chain step's outcome -> the next step's start"),
        }
        for kind, (what, label) in labels.items():
            got = flows.get(kind, {})
            delays, queued = got.get("delays", []), got.get("queued", [])
            if not delays:
                continue
            print(f"  {label}: {spread(delays)} ({len(delays)} measured; kills and cuts included)")
            print(
                f"    {what} that ran once: {got['single']}; released in the transaction that "
                f"wrote their parent's outcome: {got['same_transaction']}; then queued behind "
                f"jobs ready before them: {spread(queued)}"
            )

    def _duplicates(self, table: str, task_names: list[str]) -> tuple[int, int]:
        """(records beyond the first per job, succeeded jobs of the tasks with no record)."""
        row = self.conn.execute(
            f"SELECT (SELECT count(*) - count(DISTINCT job_id) FROM {table}), "
            "(SELECT count(*) FROM pgqueue_all_jobs AS j "
            " WHERE j.task_name = ANY(%s) AND j.status = 'succeeded' "
            f" AND NOT EXISTS (SELECT 1 FROM {table} AS r WHERE r.job_id = j.id))",
            (task_names,),
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


# -- the machine and the logs -----------------------------------------------------------------


def machine() -> str:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    text = f"{platform.system()} {platform.release()} {platform.machine()}, {cpus} CPUs (nproc)"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                text += f", {int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                text += ", " + " ".join(line.split(":", 1)[1].split())
                break
    return text


def cpu_idle(seconds: float = 1.0) -> str:
    """The share of CPU time left idle over the next `seconds` (Linux), as text."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total

    try:
        idle0, total0 = sample()
        time.sleep(seconds)  # the measuring window
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return "n/a"
    return f"{100 * (idle1 - idle0) / max(1, total1 - total0):.0f}%"


def provenance() -> str:
    """Which pgqueue the run used: its folder, and its git commit if it is a checkout."""
    package = Path(pgqueue.__file__).resolve().parent
    try:
        git = ["git", "-C", str(package)]
        commit = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changes = subprocess.run(
            [*git, "status", "--porcelain", "--", "."], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return str(package)
    return f"{package}, commit {commit}" + (", with uncommitted changes" if changes else "")


def describe_dsn(dsn: str) -> str:
    """Where the server is, without user or password."""
    params = conninfo_to_dict(dsn)
    host = str(params.get("host") or "localhost")
    return host + (f":{params['port']}" if params.get("port") else "")


LOG_PATTERNS = {
    "jobs rescued from lost workers": "its worker was lost",
    "attempts that failed on a lost connection (a cut)": r"failed in .*JobConnectionLost",
    "attempts that failed otherwise": r"failed in (?!.*JobConnectionLost)",
    "outcomes refused by fencing (lost lease)": "lost its lease",
    "workers declared lost that registered again": "registering again",
    "listening connections re-made": "lost the listening connection",
    "outcome writes retried": "could not write",
    "claims retried": "could not claim jobs",
    "maintenance passes failed": "maintenance pass failed",
    "tracebacks or critical errors": "Traceback|CRITICAL",
}


def scan_logs(log_dir: Path) -> dict[str, list[str]]:
    """Lines of interest in every worker's log, by label."""
    found: dict[str, list[str]] = {label: [] for label in LOG_PATTERNS}
    patterns = {label: re.compile(pattern) for label, pattern in LOG_PATTERNS.items()}
    for path in sorted(log_dir.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            for label, pattern in patterns.items():
                if pattern.search(line):
                    found[label].append(f"{path.stem}: {line}")
    return found


if __name__ == "__main__":
    sys.exit(main())
