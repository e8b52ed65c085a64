"""Exactly-once effects for database work: a task's writes and its job's completion commit in
one transaction.

A task declared `@app.task(transactional=True)` runs inside a transaction on a connection of
its own, given to it as `pgqueue.current_job().connection`. When the task returns, its
SUCCEEDED outcome is written on that connection, guarded by the claim's fencing token, and
the transaction commits: the task's writes and the job's completion become visible together,
or not at all. If the task raises, is cancelled, times out, or its worker dies, or if the job
was rescued from this worker meanwhile, the transaction rolls back, nothing the task wrote
survives, and the job runs again (or fails) as usual. If the job's connection itself is lost
(a cut, a server restart), the database failed, not the task: the attempt raises
JobConnectionLost, and the job is retried while attempts remain.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.pq import TransactionStatus

from pgqueue import _json, queries
from pgqueue.complete import write_outcomes, write_outcomes_sync
from pgqueue.context import _current
from pgqueue.errors import DatabaseUnavailable
from pgqueue.outcome import ClaimedJob, Succeeded
from pgqueue.progress import progress_document, write_progress_sync

if TYPE_CHECKING:
    from pgqueue.app import App


class LeaseLostError(Exception):
    """The guarded completion matched no row: the job is no longer ours; roll back."""


class JobConnectionLost(Exception):
    """The job's connection could not be opened or broke during the attempt: its transaction
    is gone with nothing written, and the job is retried whatever the task's autoretry_for."""


class ResultNotStorable(TypeError):
    """The task's return value cannot be stored as JSON: the attempt's transaction is rolled
    back and the job ends FAILED, as any task's would."""


def _lost(exc: BaseException) -> JobConnectionLost:
    return JobConnectionLost("the job's connection was lost: " + " ".join(str(exc).split()))


class TransactionalConnections:
    """Idle connections for transactional tasks, reused from job to job."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._idle: list[psycopg.Connection[Any]] = []
        self._aidle: list[psycopg.AsyncConnection[Any]] = []

    def acquire(self) -> psycopg.Connection[Any]:
        from pgqueue.app import idle_connection_ok

        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if idle_connection_ok(conn):
                    return conn
                conn.close()
        try:
            return self._app.connect()
        except DatabaseUnavailable as exc:
            raise _lost(exc) from exc

    def release(self, conn: psycopg.Connection[Any]) -> None:
        if conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
            conn.close()
            return
        with self._lock:
            self._idle.append(conn)

    async def aacquire(self) -> psycopg.AsyncConnection[Any]:
        from pgqueue.app import idle_connection_ok

        while self._aidle:
            conn = self._aidle.pop()
            if idle_connection_ok(conn):
                return conn
            await conn.close()
        try:
            return await self._app.aconnect()
        except DatabaseUnavailable as exc:
            raise _lost(exc) from exc

    async def arelease(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
            await conn.close()
            return
        self._aidle.append(conn)

    def close(self) -> None:
        """Close the idle sync connections (the async ones need `aclose()`)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def aclose(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        aidle, self._aidle = self._aidle, []
        for aconn in aidle:
            await aconn.close()


def _succeeded(job: ClaimedJob, value: Any) -> Succeeded:
    try:
        result = _json.dumps(value, "the task's return value", "result")
    except TypeError as exc:  # not one the task raised: it returned this value
        raise ResultNotStorable(str(exc)) from None
    return Succeeded(job, result, committed=True)


def _unwritten_progress(job: ClaimedJob) -> dict[int, tuple[int, str]] | None:
    """The task's last progress that its worker has not written yet: written in the task's
    transaction, before its outcome (which moves the row), so the finished job keeps it."""
    context = _current.get()
    unwritten = context._unwritten_progress() if context is not None else None
    return None if unwritten is None else {job.id: unwritten}


def run_sync(
    pool: TransactionalConnections,
    conn: psycopg.Connection[Any],
    job: ClaimedJob,
    call: Callable[[], Any],
) -> Succeeded:
    """On the task's thread: BEGIN; the task; the guarded SUCCEEDED; COMMIT. Raises what the
    task raised (or LeaseLostError) after rolling back, or JobConnectionLost if the connection
    broke."""
    try:
        with conn.transaction():
            outcome = _succeeded(job, call())
            progress = _unwritten_progress(job)
            if progress is not None:
                write_progress_sync(conn, progress)
            if job.id not in write_outcomes_sync(conn, [outcome]):
                raise LeaseLostError
        return outcome
    except Exception as exc:
        if conn.broken and not isinstance(exc, LeaseLostError):
            raise _lost(exc) from exc
        raise
    finally:
        pool.release(conn)


async def run_async(
    pool: TransactionalConnections,
    conn: psycopg.AsyncConnection[Any],
    job: ClaimedJob,
    call: Callable[[], Any],
) -> Succeeded:
    """The async twin of `run_sync`: `call()` returns the task's coroutine."""
    try:
        async with conn.transaction():
            outcome = _succeeded(job, await call())
            progress = _unwritten_progress(job)
            if progress is not None:
                await conn.execute(
                    queries.WRITE_PROGRESS, {"progress": progress_document(progress)}
                )
            if job.id not in await write_outcomes(conn, [outcome]):
                raise LeaseLostError
        return outcome
    except Exception as exc:
        if conn.broken and not isinstance(exc, LeaseLostError):
            raise _lost(exc) from exc
        raise
    finally:
        await pool.arelease(conn)
