"""The peers pgqueue's benchmark compares against, run through the same workloads: PgQueuer,
procrastinate, and Celery with Redis as its broker.

    .venv/bin/python benchmarks/peers.py --quick     # 1,000 jobs, 3 s of latency
    .venv/bin/python benchmarks/peers.py             # 20,000 jobs, 10 s of latency

Every run gets a fresh database (created on $PGQUEUE_DSN's server, or the embedded one, and
dropped afterwards) or a flushed Redis db ($PEERS_REDIS_URL, db 15 by default), the peer's
schema applied by the peer's own API, and ONE worker process started with the peer's own CLI
(for PgQueuer, `pgqueuer.run`, the documented twin of `pgq run`, which fails in 1.6.0).
Each peer runs with its fastest documented settings for a no-op load (`SETTINGS`, with the
reasons beside the constants below) and, for the drain, also with its defaults
(`DEFAULT_SETTINGS`), so the report can show what the tuning is worth.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import make_conninfo

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # the peer_tasks package, as the workers see it (cwd=HERE)

from bench import paced, percentiles, server_dsn  # noqa: E402

LOGS = HERE / "results" / "logs"
REDIS_URL = os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6379/15")

PEERS = ("pgqueuer", "procrastinate", "celery")
PRESETS = ("fastest", "default")

# -- settings ----------------------------------------------------------------------------------
#
# The knobs are the ones each peer documents for throughput; where a doc names a direction but
# no value, the value is the best of a sweep on this 2-core machine (shared, so noisy: the
# figures in the comments are indicative, 2,000-5,000-job drains).
#
# PgQueuer (docs: guides/performance-tuning.md, development/benchmark.md): the dequeue batch
# size is the knob ("increase batch_size when jobs are short-lived"; default 10); asyncpg is its
# documented faster driver ("roughly double the throughput of psycopg"); one dedicated
# connection for the QueueManager; `pgq autovac` is on its tuning checklist. Tables stay
# `durable` (logged), like pgqueue's: `balanced`/`volatile` lose jobs in a crash. Swept
# (asyncpg): batch 10 ~2.3k/s, 50 ~4.5k, 100 ~5-5.7k, 250 ~6.4-6.7k, 500 ~5-6k, 1000 ~6k;
# psycopg: batch 10 ~1.0k, 100 ~1.4k. Out of the box: batch 10 on psycopg (the driver pgqueue
# itself uses; asyncpg is PgQueuer's `asyncpg` extra, not installed with it).
PGQUEUER_BATCH = 250
PGQUEUER_DRIVER = "asyncpg" if importlib.util.find_spec("asyncpg") else "psycopg"
_PGQUEUER_LOOP = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"  # as pgq run
#
# procrastinate (docs: howto/concurrency, discussions "Asynchronous operations & concurrency"
# and "Mind the size of your PostgreSQL pool"): async tasks run natively (sync ones go through
# a thread); `--concurrency` sub-workers, each fetching one job at a time; with short jobs the
# pool should hold as many connections as the concurrency; LISTEN/NOTIFY on (its default).
# Swept (queue not yet analyzed): concurrency 1 ~150/s, 5 ~200, 10 ~230, 20 ~180, 50 ~130.
# Jobs are kept (the default; --delete-jobs would also delete the events the drain is timed
# by). Out of the box: concurrency 1, psycopg_pool's default pool (4 connections).
PROCRASTINATE_CONCURRENCY = 10
#
# Celery (docs: userguide/optimizing "Prefetch limits", "lots of short tasks": a large
# multiplier, "say 64 or 128", and rate limits disabled; userguide/tasks: ignore results you
# don't want; userguide/workers: --without-heartbeat/--without-gossip/--without-mingle drop
# the cluster chatter a lone worker doesn't need). Early acknowledgement (the default;
# acks_late costs a round trip per task). Pool: prefork with one child per core, Celery's
# default; swept, solo ~280-470/s, threads x4 ~410-450, threads x10 ~400, prefork x2
# ~370-490: no pool wins beyond the noise, so the default stays. Out of the box: the same
# pool, multiplier 4, heartbeat, gossip and mingle on, rate limits on.
CELERY_POOL = "prefork"
CELERY_CONCURRENCY = os.cpu_count() or 1
CELERY_PREFETCH = 128

# Not a peer setting but a condition of the drain, said beside the settings of the peers it
# concerns: see drain(analyze=...).
_ANALYZED = "; the filled queue ANALYZEd before the drain"

SETTINGS: dict[str, str] = {
    "pgqueuer": (
        f"pgqueuer.run (= pgq run) on {_PGQUEUER_LOOP}, a QueueManager on one"
        f" {PGQUEUER_DRIVER} connection,"
        f" batch_size {PGQUEUER_BATCH}, max_concurrent_tasks unlimited, LISTEN/NOTIFY,"
        " pgq autovac, durable tables, async entrypoint" + _ANALYZED
    ),
    "procrastinate": (
        f"procrastinate worker --concurrency {PROCRASTINATE_CONCURRENCY}, psycopg pool of"
        f" {PROCRASTINATE_CONCURRENCY}, listen_notify on, jobs kept, async task" + _ANALYZED
    ),
    "celery": (
        f"celery worker --pool {CELERY_POOL} --concurrency {CELERY_CONCURRENCY}"
        f" --prefetch-multiplier {CELERY_PREFETCH} --without-heartbeat --without-gossip"
        " --without-mingle, rate limits off, acks early, no result backend, Redis broker"
    ),
}
DEFAULT_SETTINGS: dict[str, str] = {
    "pgqueuer": (
        f"pgqueuer.run (= pgq run) on {_PGQUEUER_LOOP}, a QueueManager on one psycopg"
        " connection, batch 10" + _ANALYZED
    ),
    "procrastinate": (
        "procrastinate worker, concurrency 1, default pool (4), listen_notify on" + _ANALYZED
    ),
    "celery": (
        "celery worker, prefork pool of one child per core, prefetch multiplier 4,"
        " heartbeat/gossip/mingle on, rate limits on, no result backend, Redis broker"
    ),
}

T = TypeVar("T")


def _check(peer: str, preset: str) -> None:
    if peer not in PEERS:
        raise ValueError(f"unknown peer {peer!r}; one of {PEERS}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; one of {PRESETS}")


# -- availability ------------------------------------------------------------------------------

_MODULES = {
    "pgqueuer": ("pgqueuer",),
    "procrastinate": ("procrastinate",),
    "celery": ("celery", "redis"),
}


def available(server_dsn: str | None = None) -> dict[str, str | None]:
    """peer -> None when it can run here, else why not: its packages must import and its
    service answer (Redis for Celery; PostgreSQL for the others, checked when `server_dsn` is
    given — pgqueue's own benchmark needs that server anyway)."""
    postgres: str | None = None
    if server_dsn is not None:
        try:
            with psycopg.connect(server_dsn, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            postgres = f"PostgreSQL unreachable: {exc}".strip()
    result: dict[str, str | None] = {}
    for peer in PEERS:
        reason: str | None = None
        for module in _MODULES[peer]:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                reason = f"not installed: {exc}"
                break
        if reason is None and peer == "celery":
            reason = _redis_problem()
        elif reason is None:
            reason = postgres
        result[peer] = reason
    return result


def _redis_problem() -> str | None:
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as exc:
        return f"Redis unreachable at {REDIS_URL}: {exc}"
    return None


# -- per-run environment -----------------------------------------------------------------------


@dataclass
class _Run:
    """What one workload run on one peer has to itself: a database or Redis db, and the
    samples file its tasks append to."""

    peer: str
    preset: str
    dsn: str  # the run's database ("" for Celery)
    samples: Path
    name: str  # for log files


@contextmanager
def _fresh_database(server_dsn: str, name: str) -> Iterator[str]:
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(server_dsn, dbname=name)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def _flushed_redis() -> Iterator[None]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
        yield
    finally:
        client.flushdb()
        client.close()


@contextmanager
def _run(peer: str, preset: str, server_dsn: str, workload: str) -> Iterator[_Run]:
    """A fresh database with the peer's schema (or a flushed Redis db) and a samples file,
    all removed afterwards."""
    _check(peer, preset)
    name = f"{workload}-{peer}-{preset}"
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="peers-")))
        samples = tmp / "samples"
        samples.touch()
        if peer == "celery":
            stack.enter_context(_flushed_redis())
            dsn = ""
        else:
            dsn = stack.enter_context(_fresh_database(server_dsn, f"peers_{peer}_{os.getpid()}"))
            _install_schema(peer, preset, dsn)
        yield _Run(peer, preset, dsn, samples, name)


def _install_schema(peer: str, preset: str, dsn: str) -> None:
    if peer == "pgqueuer":

        async def install() -> None:
            from peer_tasks.pgqueuer_app import connect
            from pgqueuer.queries import Queries

            async with connect(dsn, "psycopg") as driver:
                queries = Queries(driver)
                await queries.install()  # what `pgq install` runs
                if preset == "fastest":
                    await queries.optimize_autovacuum()  # what `pgq autovac` runs

        asyncio.run(install())
    else:
        with _procrastinate(dsn) as app:
            app.schema_manager.apply_schema()


@contextmanager
def _procrastinate(dsn: str) -> Iterator[Any]:
    """The worker's app with its connector replaced by one to this run's database
    (procrastinate's `App.replace_connector`), opened for sync use."""
    import procrastinate
    from peer_tasks.procrastinate_app import app

    connector = procrastinate.PsycopgConnector(conninfo=dsn)
    with app.replace_connector(connector) as replaced, replaced.open():
        yield replaced


# -- workers -----------------------------------------------------------------------------------


def _worker_command(run: _Run) -> tuple[list[str], dict[str, str]]:
    """The peer's own CLI, with the preset's options, and the environment its tasks read."""
    py = sys.executable
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PEER_DSN": run.dsn,
        "PEER_SAMPLES": str(run.samples),
        "PEER_REDIS_URL": REDIS_URL,
        "PEER_PRESET": run.preset,
    }
    fastest = run.preset == "fastest"
    if run.peer == "pgqueuer":
        env["PEER_PGQ_DRIVER"] = PGQUEUER_DRIVER if fastest else "psycopg"
        batch = PGQUEUER_BATCH if fastest else 10
        # pgqueuer.run(), the documented twin of `pgq run`, which fails in 1.6.0 (see there).
        argv = [py, "-m", "peer_tasks.pgqueuer_app", "--batch-size", str(batch)]
    elif run.peer == "procrastinate":
        concurrency = PROCRASTINATE_CONCURRENCY if fastest else 1
        if fastest:
            env["PEER_POOL_SIZE"] = str(concurrency)
        argv = [py, "-m", "procrastinate", "--app", "peer_tasks.procrastinate_app.app"]
        argv += ["--log-level", "warning", "worker", "--queues", "peers"]
        argv += ["--concurrency", str(concurrency)]
    else:
        argv = [py, "-m", "celery", "-A", "peer_tasks.celery_app", "worker"]
        argv += ["--loglevel", "WARNING", "--queues", "peers", "--hostname", "peers@%h"]
        if fastest:
            argv += ["--pool", CELERY_POOL, "--concurrency", str(CELERY_CONCURRENCY)]
            argv += ["--prefetch-multiplier", str(CELERY_PREFETCH)]
            argv += ["--without-heartbeat", "--without-gossip", "--without-mingle"]
    return argv, env


class _Worker:
    """One worker process of a peer, in its own session, always stopped."""

    def __init__(self, run: _Run) -> None:
        argv, env = _worker_command(run)
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / f"peers-{run.name}.log"
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            argv,
            cwd=HERE,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def check(self) -> None:
        """Raise if the worker died: waiting for it would only run into the deadline."""
        if self.process.poll() is not None:
            raise RuntimeError(
                f"worker exited with {self.process.returncode}; its log, {self.log_path}:\n"
                + self.log_path.read_text(errors="replace")[-3000:]
            )

    def stop(self) -> None:
        """SIGTERM (each peer's graceful shutdown), then SIGKILL to its whole process group
        (Celery's pool children included) if it has not gone within 30 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.log.close()


@contextmanager
def _worker(run: _Run) -> Iterator[_Worker]:
    worker = _Worker(run)
    try:
        yield worker
    finally:
        worker.stop()


def _wait(worker: _Worker, done: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `done` every 50 ms until it holds, the worker dies, or the deadline passes."""
    deadline = time.monotonic() + timeout
    while not done():
        worker.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not done within {timeout:.0f} s")
        time.sleep(0.05)  # polling progress


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


# -- producers ---------------------------------------------------------------------------------


class _Producer:
    """A peer's client side: bulk enqueue of no-ops, and single probes for the latency. The
    asyncio peers run on one event loop kept for the producer's life, so a single enqueue
    costs what it costs in an async application, not a new loop."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.loop = asyncio.new_event_loop()
        self.stack = ExitStack()

    def _await(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def __enter__(self) -> _Producer:
        peer = self.run.peer
        try:
            if peer == "pgqueuer":
                from peer_tasks.pgqueuer_app import connect
                from pgqueuer.queries import Queries

                driver = "psycopg" if self.run.preset == "default" else PGQUEUER_DRIVER
                cm = connect(self.run.dsn, driver)
                self.queries = Queries(self._await(cm.__aenter__()))
                self.stack.callback(lambda: self._await(cm.__aexit__(None, None, None)))
            elif peer == "procrastinate":
                import procrastinate
                from peer_tasks import procrastinate_app

                self.tasks = procrastinate_app
                connector = procrastinate.PsycopgConnector(conninfo=self.run.dsn)
                app = self.stack.enter_context(procrastinate_app.app.replace_connector(connector))
                self._await(app.open_async().__aenter__())
                self.stack.callback(lambda: self._await(app.close_async()))
            else:
                from peer_tasks import celery_app

                self.celery = celery_app
                # One producer (and broker connection) for the whole run, passed to
                # apply_async(producer=...) as its reference documents, rather than one
                # taken from the pool for every message.
                self.publisher = self.stack.enter_context(celery_app.app.producer_or_acquire())
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.stack.close()
        finally:
            self.loop.close()

    def noops(self, n: int) -> None:
        """Enqueue n no-op jobs with the peer's fastest bulk API."""
        if self.run.peer == "pgqueuer":
            self._await(self.queries.enqueue(["noop"] * n, [None] * n, [0] * n))
        elif self.run.peer == "procrastinate":
            self._await(self.tasks.noop.batch_defer_async(*({} for _ in range(n))))
        else:
            # No bulk API in Celery (a group publishes one message per signature too): a
            # loop of apply_async on one held producer is the cheapest documented path.
            noop = self.celery.noop
            for _ in range(n):
                noop.apply_async(producer=self.publisher)

    def probe(self) -> None:
        """Enqueue one probe job carrying the time it was sent."""
        sent = time.time()
        if self.run.peer == "pgqueuer":
            self._await(self.queries.enqueue("probe", repr(sent).encode()))
        elif self.run.peer == "procrastinate":
            self._await(self.tasks.probe.defer_async(sent=sent))
        else:
            self.celery.probe.apply_async((sent,), producer=self.publisher)


# -- workloads ---------------------------------------------------------------------------------


@contextmanager
def _finished_check(run: _Run, n: int) -> Iterator[Callable[[], bool]]:
    """Whether all n jobs have finished, asked of the peer's own tables on one connection kept
    for the polling (Celery, which keeps no such record, is counted from its samples file)."""
    if run.peer == "celery":
        yield lambda: len(_lines(run.samples)) >= n
        return
    sql = {
        # Finished jobs leave PgQueuer's queue table (their outcome goes to pgqueuer_log).
        "pgqueuer": "SELECT NOT EXISTS (SELECT 1 FROM pgqueuer)",
        "procrastinate": "SELECT NOT EXISTS (SELECT 1 FROM procrastinate_jobs"
        " WHERE status IN ('todo', 'doing'))",
    }[run.peer]
    with psycopg.connect(run.dsn, autocommit=True) as conn:

        def done() -> bool:
            row = conn.execute(sql).fetchone()
            return bool(row and row[0])

        yield done


def _drain_seconds(run: _Run, n: int) -> float:
    """First job start to last job finish, as the peer itself recorded them."""
    if run.peer == "celery":
        spans = [tuple(map(float, line.split())) for line in _lines(run.samples)]
        if len(spans) != n:
            raise RuntimeError(f"celery ran {len(spans)} jobs, not {n}")
        return max(s[1] for s in spans) - min(s[0] for s in spans)
    sql = {
        # PgQueuer logs each job's pick and outcome, timestamped by the database.
        "pgqueuer": "SELECT count(*) FILTER (WHERE status = 'successful'),"
        " extract(epoch FROM max(created) FILTER (WHERE status = 'successful')"
        " - min(created) FILTER (WHERE status = 'picked'))::float8 FROM pgqueuer_log",
        # procrastinate's events table: one row per state change, timestamped likewise.
        "procrastinate": "SELECT count(*) FILTER (WHERE type = 'succeeded'),"
        " extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded')"
        " - min(at) FILTER (WHERE type = 'started'))::float8 FROM procrastinate_events",
    }[run.peer]
    with psycopg.connect(run.dsn) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    if row[0] != n:
        raise RuntimeError(f"{run.peer} recorded {row[0]} successful jobs, not {n}")
    return float(row[1])


def drain(
    peer: str,
    server_dsn: str,
    n: int,
    *,
    preset: str = "fastest",
    analyze: bool = True,
    from_start: bool = False,
) -> float:
    """Jobs/s for ONE worker process emptying n queued no-op jobs, from the first job's start
    to the last one's finish (the database's own timestamps for PgQueuer and procrastinate;
    the task's own clock for Celery, which keeps none). Enqueueing and worker start-up are
    outside the timing.

    `analyze` runs ANALYZE on the filled queue before the worker starts, as autovacuum's
    autoanalyze would soon after such an insert in production: without statistics on a fresh
    database, procrastinate's fetch plan costs in proportion to the backlog (seen here: a
    5,000-job drain went from ~120/s to ~290/s as it emptied; ~320/s flat once analyzed;
    20,000 jobs ~60/s). It favours the peers: pgqueue's own drain runs without it.

    `from_start` times from just before the worker's exec instead (start-up included), to the
    last finish on the database's clock (same machine); PgQueuer and procrastinate only."""
    with _run(peer, preset, server_dsn, "drain") as run:
        with _Producer(run) as producer:
            producer.noops(n)
        if analyze and run.dsn:
            with psycopg.connect(run.dsn, autocommit=True) as conn:
                conn.execute("ANALYZE")
        started_at = time.time()
        with _worker(run) as worker, _finished_check(run, n) as finished:
            _wait(worker, finished, timeout=120 + n / 50, what=f"{peer} drain")
        seconds = _drain_seconds(run, n)
        if from_start:
            seconds = _last_finish(run) - started_at
        return n / seconds


def _last_finish(run: _Run) -> float:
    """The epoch of the last job's finish, as the peer recorded it (the database's clock)."""
    sql = {
        "pgqueuer": "SELECT extract(epoch FROM max(created))::float8 FROM pgqueuer_log"
        " WHERE status = 'successful'",
        "procrastinate": "SELECT extract(epoch FROM max(at))::float8 FROM procrastinate_events"
        " WHERE type = 'succeeded'",
    }[run.peer]
    with psycopg.connect(run.dsn) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None and row[0] is not None
    return float(row[0])


def pickup_latency(
    peer: str, server_dsn: str, rate: float = 50, seconds: float = 10, *, preset: str = "fastest"
) -> dict[str, float]:
    """Pickup latency (producer's time.time() just before enqueueing -> the task's own
    time.time() when it starts) of single jobs offered at `rate`/s for `seconds` to one idle
    worker. The worker counts as ready once it has run a first probe, not counted."""
    with _run(peer, preset, server_dsn, "latency") as run, _Producer(run) as producer:
        with _worker(run) as worker:
            producer.probe()
            _wait(worker, lambda: len(_lines(run.samples)) >= 1, 120, f"{peer} start")
            total = max(2, int(rate * seconds))
            paced(total, 1 / rate, producer.probe)
            _wait(worker, lambda: len(_lines(run.samples)) >= total + 1, 120, f"{peer} probes")
        samples = [float(line) for line in _lines(run.samples)[1:]]
    return {**percentiles(samples), "jobs": float(len(samples))}


def bulk_enqueue(peer: str, server_dsn: str, n: int) -> float:
    """Jobs/s enqueueing n no-op jobs in one call of the peer's fastest bulk API (PgQueuer's
    `Queries.enqueue` with lists, procrastinate's `batch_defer_async`, Celery's
    `apply_async` in a loop on one producer), connected beforehand."""
    with _run(peer, "fastest", server_dsn, "bulk") as run, _Producer(run) as producer:
        start = time.perf_counter()
        producer.noops(n)
        return n / (time.perf_counter() - start)


# -- command line ------------------------------------------------------------------------------


def _attempt(what: str, fn: Callable[[], T]) -> T | None:
    """Run one workload; on failure say so and go on with the others."""
    try:
        return fn()
    except Exception as exc:
        print(f"  {what} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return None


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per drain and bulk")
    parser.add_argument("--quick", action="store_true", help="1,000 jobs, 3 s of latency")
    parser.add_argument("--peer", choices=PEERS, action="append", help="only these (repeat)")
    parser.add_argument("--dsn", help="PostgreSQL server (default: as benchmarks/bench.py)")
    args = parser.parse_args()
    n = 1_000 if args.quick else args.jobs
    seconds = 3.0 if args.quick else 10.0
    server = args.dsn or server_dsn()
    with psycopg.connect(server) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        where = f"{conn.info.host}:{conn.info.port}"
    print(f"PostgreSQL {version and version[0]} at {where}, Redis at {REDIS_URL}", flush=True)

    rows: list[list[str]] = []
    for peer, reason in available(server).items():
        if args.peer and peer not in args.peer:
            continue
        if reason is not None:
            print(f"{peer}: skipped, {reason}", flush=True)
            continue
        print(f"{peer}: running", flush=True)
        fast = _attempt("drain", lambda p=peer: drain(p, server, n))
        default = _attempt("drain (defaults)", lambda p=peer: drain(p, server, n, preset="default"))
        lat = _attempt("latency", lambda p=peer: pickup_latency(p, server, 50, seconds))
        bulk = _attempt("bulk enqueue", lambda p=peer: bulk_enqueue(p, server, n))
        lat = lat or {}
        rows.append(
            [
                peer,
                _cell(fast),
                _cell(default),
                *(_cell(lat.get(k)) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")),
                _cell(bulk),
            ]
        )

    head = ["peer", "drain/s", "default/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "bulk/s"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    print()
    print(f"{n:,} jobs per drain and bulk enqueue; latency at 50 jobs/s for {seconds:g} s")
    for row in [head, *rows]:
        cells = [c.rjust(w) for c, w in zip(row, widths, strict=True)]
        print("  ".join([row[0].ljust(widths[0]), *cells[1:]]))
    print()
    for peer in (r[0] for r in rows):
        print(f"{peer} (drain/s, latency, bulk): {SETTINGS[peer]}")
        print(f"{peer} (default/s): {DEFAULT_SETTINGS[peer]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
