"""The app that the acceptance tests' real `pgqueue worker` processes load.

Workers run it with `--app tests.acceptance.apps:app` and find their database in PGQUEUE_DSN.
Every task writes one row per execution into `acceptance_executions`, so a test counts how
often each job really ran, and in which process. The blocking tasks wait for a row in
`acceptance_flags`, so a test decides when a running job may finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
from typing import Any

import psycopg

import pgqueue

app = pgqueue.App()  # the DSN comes from PGQUEUE_DSN, set per worker process by the tests

# Something importable that is not an App, for the `--app module:attribute` error test.
NOT_AN_APP = "a string, not a pgqueue.App"

TABLES_DDL = """
CREATE TABLE acceptance_executions (
    job_id bigint NOT NULL,
    attempt int NOT NULL,
    task text NOT NULL,
    pid int NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE acceptance_flags (name text PRIMARY KEY);
"""

RECORD_EXECUTION = (
    "INSERT INTO acceptance_executions (job_id, attempt, task, pid) VALUES (%s, %s, %s, %s)"
)
FLAG_IS_SET = "SELECT EXISTS (SELECT 1 FROM acceptance_flags WHERE name = %s)"
POLL_INTERVAL = 0.05  # how often a blocking task looks for its flag

_local = threading.local()
_async_conn: psycopg.AsyncConnection[Any] | None = None
_async_conn_lock: asyncio.Lock | None = None


def _execution_row() -> tuple[int, int, str, int]:
    job = pgqueue.current_job()
    assert job is not None, "only a worker runs these tasks"
    return (job.id, job.attempt, job.task_name, os.getpid())


def _conn() -> psycopg.Connection[Any]:
    """This task thread's own autocommit connection."""
    conn: psycopg.Connection[Any] | None = getattr(_local, "conn", None)
    if conn is None or conn.closed or conn.broken:
        conn = app.connect(autocommit=True)
        _local.conn = conn
    return conn


async def _aconn() -> psycopg.AsyncConnection[Any]:
    """The worker loop's one async connection (psycopg serialises its concurrent users)."""
    global _async_conn, _async_conn_lock
    if _async_conn_lock is None:
        _async_conn_lock = asyncio.Lock()
    async with _async_conn_lock:
        if _async_conn is None or _async_conn.closed or _async_conn.broken:
            _async_conn = await app.aconnect(autocommit=True)
    return _async_conn


def _flag_is_set(name: str) -> bool:
    row = _conn().execute(FLAG_IS_SET, (name,)).fetchone()
    return bool(row and row[0])


async def _aflag_is_set(name: str) -> bool:
    conn = await _aconn()
    cur = await conn.execute(FLAG_IS_SET, (name,))
    row = await cur.fetchone()
    return bool(row and row[0])


@app.task
def record(n: int) -> int:
    """Record this execution and return `n` (sync: runs on the worker's thread pool)."""
    _conn().execute(RECORD_EXECUTION, _execution_row())
    return n


@app.task
async def arecord(n: int) -> int:
    """Record this execution and return `n` (async: runs on the worker's event loop)."""
    conn = await _aconn()
    await conn.execute(RECORD_EXECUTION, _execution_row())
    return n


@app.task
def block(flag: str) -> str:
    """Record that it started, then run until the flag `flag` is set (sync)."""
    _conn().execute(RECORD_EXECUTION, _execution_row())
    while not _flag_is_set(flag):
        time.sleep(POLL_INTERVAL)
    return f"released by {flag}"


@app.task
async def ablock(flag: str) -> str:
    """Record that it started, then run until the flag `flag` is set (async)."""
    conn = await _aconn()
    await conn.execute(RECORD_EXECUTION, _execution_row())
    while not await _aflag_is_set(flag):
        await asyncio.sleep(POLL_INTERVAL)
    return f"released by {flag}"


@app.task(concurrency_limit=1)
def block_one_at_a_time(flag: str) -> str:
    """`block` with a fleet-wide concurrency limit of one."""
    _conn().execute(RECORD_EXECUTION, _execution_row())
    while not _flag_is_set(flag):
        time.sleep(POLL_INTERVAL)
    return f"released by {flag}"


@app.task(timeout=5)
def block_with_timeout(flag: str) -> str:
    """`block` with a 5 s timeout: what a frozen worker leaves running past its time limit."""
    _conn().execute(RECORD_EXECUTION, _execution_row())
    while not _flag_is_set(flag):
        time.sleep(POLL_INTERVAL)
    return f"released by {flag}"


@app.task(max_attempts=2, retry_backoff=0.1, retry_jitter=False, autoretry_for=(ValueError,))
def always_fails() -> None:
    """Fails every attempt with a retryable error: one retry, then FAILED."""
    _conn().execute(RECORD_EXECUTION, _execution_row())
    raise ValueError("this task always fails")


@app.task(max_attempts=1)
def fails_until_flag(flag: str) -> str:
    """Record this execution, then fail (no retry) unless the flag `flag` is set: a job an
    operator retries once the test has "fixed" what made it fail."""
    _conn().execute(RECORD_EXECUTION, _execution_row())
    if not _flag_is_set(flag):
        raise RuntimeError(f"flag {flag!r} is not set yet")
    return f"succeeded once {flag} was set"


# -- tasks of the reliability tests (kills, freezes, outages, time limits) -------------------

# How long a task keeps trying to record its execution while the database is away.
OUTAGE_PATIENCE = 60.0
# The flag that lets `overrun`'s blocked threads return: until a test sets it, an
# overrunning attempt cannot end but by its timeout, however slow the machine.
OVERRUN_RELEASE = "overrun-release"


def overrun_finished_flag(job_id: int, attempt: int) -> str:
    """The flag `overrun` sets when an overrunning attempt's thread finally returns."""
    return f"overrun-{job_id}-{attempt}-returned"


def _record_despite_outages() -> None:
    """Record this execution, reconnecting while the server is away (its connections
    terminated, or restarting): the job itself must not fail because its bookkeeping did.

    A retried INSERT whose first try committed just before the cut would record twice, so
    tests count executions as distinct (job, attempt, pid).
    """
    row = _execution_row()
    deadline = time.monotonic() + OUTAGE_PATIENCE
    while True:
        try:
            _conn().execute(RECORD_EXECUTION, row)
            return
        except (psycopg.OperationalError, pgqueue.DatabaseUnavailable):
            if time.monotonic() > deadline:
                raise
            _local.conn = None
            time.sleep(POLL_INTERVAL)  # the task's own reconnect backoff


async def _arecord_despite_outages() -> None:
    """The async twin of `_record_despite_outages`."""
    global _async_conn
    row = _execution_row()
    deadline = time.monotonic() + OUTAGE_PATIENCE
    while True:
        try:
            conn = await _aconn()
            await conn.execute(RECORD_EXECUTION, row)
            return
        except (psycopg.OperationalError, pgqueue.DatabaseUnavailable):
            if time.monotonic() > deadline:
                raise
            _async_conn = None
            await asyncio.sleep(POLL_INTERVAL)


@app.task
def steady(n: int, seconds: float = 0.02) -> int:
    """Record this execution (surviving outages), work for `seconds`, return `n` (sync)."""
    _record_despite_outages()
    time.sleep(seconds)  # the job's work
    return n


@app.task
async def asteady(n: int, seconds: float = 0.02) -> int:
    """Record this execution (surviving outages), work for `seconds`, return `n` (async)."""
    await _arecord_despite_outages()
    await asyncio.sleep(seconds)  # the job's work
    return n


@app.task
def block_and_report(flag: str) -> dict[str, int]:
    """Record that it started, run until `flag` is set, then say which process and attempt
    produced the result (sync), so a test can tell whose outcome the job row kept."""
    execution = _execution_row()
    _conn().execute(RECORD_EXECUTION, execution)
    while not _flag_is_set(flag):
        time.sleep(POLL_INTERVAL)
    return {"pid": os.getpid(), "attempt": execution[1]}


@app.task(max_attempts=2)
def kill_worker() -> None:
    """A poison job: record the execution, then take the whole worker process down."""
    _conn().execute(RECORD_EXECUTION, _execution_row())
    os._exit(1)


@app.task(
    timeout=0.5,
    max_attempts=2,
    retry_backoff=0.1,
    retry_jitter=False,
    autoretry_for=(TimeoutError,),
)
async def sleep_forever() -> None:
    """Record the execution, then never finish: only its 0.5 s timeout ends an attempt."""
    await (await _aconn()).execute(RECORD_EXECUTION, _execution_row())
    await asyncio.Event().wait()


@app.task(
    timeout=0.5,
    max_attempts=2,
    retry_backoff=0.1,
    retry_jitter=False,
    autoretry_for=(TimeoutError,),
)
def overrun(attempts: list[int]) -> str:
    """Record the execution; on the listed attempts block the thread until the flag
    OVERRUN_RELEASE is set, far past the 0.5 s timeout, then set a flag and return a late
    result (sync)."""
    execution = _execution_row()
    _conn().execute(RECORD_EXECUTION, execution)
    job_id, attempt = execution[0], execution[1]
    if attempt in attempts:
        while not _flag_is_set(OVERRUN_RELEASE):  # a thread Python cannot interrupt
            time.sleep(POLL_INTERVAL)
        _conn().execute(
            "INSERT INTO acceptance_flags (name) VALUES (%s)",
            (overrun_finished_flag(job_id, attempt),),
        )
        return f"late result of attempt {attempt}"
    return f"result of attempt {attempt}"


# -- hostile outcomes (the torture test): what a task may return, raise or do -----------------

# What `hostile_value(kind, n)` builds: none of these can be stored as a job's result.
HOSTILE_VALUES = (
    "huge_int",
    "nan",
    "inf",
    "lone_surrogate",
    "nul",
    "deep",
    "cycle",
    "int_key",
    "tuple_key",
    "bytes",
    "set",
    "bad_repr",
    "surrogate_key",
)
# What `hostile_exception(kind)` builds, for a task to raise.
HOSTILE_EXCEPTIONS = (
    "bad_str",
    "huge_message",
    "surrogate_message",
    "system_exit",
    "keyboard_interrupt",
    "generator_exit",
    "cancelled",
    "value_error",
)
# What a task may do to its process before it returns.
HOSTILE_DEEDS = ("close_stdout", "close_stderr", "log_surrogate", "print_huge")


class _ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("this object has no repr")


class _StrRaises(Exception):
    def __str__(self) -> str:
        raise RuntimeError("this exception has no str")


def hostile_value(kind: str, n: int) -> Any:
    """A value no JSON column can hold (`n` sizes it where that makes sense)."""
    if kind == "huge_int":
        return 10 ** (5000 + n)
    if kind in ("nan", "inf"):
        return [1.5, {"x": float(kind)}]
    if kind == "lone_surrogate":
        return {"text": "ok" * n + "\ud83d"}
    if kind == "nul":
        return ["a\x00b"]
    if kind == "deep":
        value: Any = []
        for _ in range(600 + n * 100):
            value = [value]
        return value
    if kind == "cycle":
        loop: list[Any] = [n]
        loop.append({"back": loop})
        return loop
    if kind == "int_key":
        return {n: "int key"}
    if kind == "tuple_key":
        return {(n, n): "tuple key"}
    if kind == "bytes":
        return b"\xff" * (n + 1)
    if kind == "set":
        return {n, n + 1}
    if kind == "bad_repr":
        return {"obj": _ReprRaises()}
    if kind == "surrogate_key":
        return {"\udc80" * (n + 1): 1}
    raise AssertionError(f"unknown hostile value {kind!r}")


def hostile_exception(kind: str) -> BaseException:
    if kind == "bad_str":
        return _StrRaises()
    if kind == "huge_message":
        return ValueError("m" * 10_000_000)
    if kind == "surrogate_message":
        return ValueError("lone \ud83d and nul \x00")
    if kind == "system_exit":
        return SystemExit(3)
    if kind == "keyboard_interrupt":
        return KeyboardInterrupt()
    if kind == "generator_exit":
        return GeneratorExit()
    if kind == "cancelled":
        return asyncio.CancelledError()
    if kind == "value_error":
        return ValueError("an ordinary failure")
    raise AssertionError(f"unknown hostile exception {kind!r}")


def _do_hostile_deed(deed: str | None) -> None:
    if deed == "close_stdout":
        sys.stdout.close()
    elif deed == "close_stderr":
        sys.stderr.close()
    elif deed == "log_surrogate":
        logging.getLogger("tests.hostile").warning("a task's line with \ud83d in it")
    elif deed == "print_huge":
        with contextlib.suppress(ValueError):  # stdout may be closed already
            print("p" * 10_000_000)


def _hostile(recipe: dict[str, Any]) -> Any:
    _do_hostile_deed(recipe.get("deed"))
    if recipe.get("raise"):
        raise hostile_exception(recipe["raise"])
    if recipe.get("return"):
        return hostile_value(recipe["return"], recipe.get("n", 0))
    return recipe.get("value")


HOSTILE_OPTIONS: dict[str, Any] = {
    "max_attempts": 2,
    "retry_backoff": 0.05,
    "retry_jitter": False,
    "autoretry_for": (ValueError,),
}


@app.task(**HOSTILE_OPTIONS)
def hostile(recipe: dict[str, Any]) -> Any:
    """Do, raise or return what `recipe` says (sync)."""
    return _hostile(recipe)


@app.task(**HOSTILE_OPTIONS)
async def ahostile(recipe: dict[str, Any]) -> Any:
    """Do, raise or return what `recipe` says (async, on the event loop)."""
    await asyncio.sleep(0)
    return _hostile(recipe)


@app.task(**HOSTILE_OPTIONS, timeout=60)
async def ahostile_timed(recipe: dict[str, Any]) -> Any:
    """`ahostile` with a timeout: the attempt runs in an asyncio Task of its own."""
    await asyncio.sleep(0)
    return _hostile(recipe)
