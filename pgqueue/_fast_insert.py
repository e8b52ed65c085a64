"""`delay()` of a job due now, on pgqueue's own autocommit connection: INSERT_JOB_NOW prepared
once per connection and run through libpq, below psycopg's cursors.

That call is what an application that enqueues one job per request runs most, and it is
mostly waiting for the commit: what is left to shave is the client's own work. Through a
psycopg cursor a statement costs about 60 us of Python on top of the round trip, a fifth of an
INSERT and its commit on a fast disk; run directly, INSERT_JOB_NOW (with its RETURNING and
NOTIFY) took 231 us where a bare INSERT through a cursor took 289 (docs/benchmarks.md).

Only this one statement, only on the connection pgqueue owns (autocommit, one per thread, never
inside a transaction of the application's): with `connection=`, in async code, and for jobs with
a due time or an expiry, psycopg runs the statement as usual. Errors are psycopg's own classes,
made from the server's result, so callers handle them alike.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors
from psycopg.pq import ConnStatus, DiagnosticField, ExecStatus, Format

from pgqueue import queries

if TYPE_CHECKING:
    from pgqueue.enqueue import JobRequest

NAME = b"pgqueue_insert_job_now"
PARAMS = ("queue", "task_name", "args", "kwargs", "priority", "max_attempts")
STATEMENT = queries.as_libpq(queries.INSERT_JOB_NOW, PARAMS).encode()
TIMESTAMPTZ_OID = 1184


class FastInsert:
    """INSERT_JOB_NOW on one connection: prepared at first use (and again if the server
    dropped it, as DISCARD ALL does), executed with text parameters and a binary result."""

    __slots__ = ("_conn", "_encoding", "_load_timestamptz", "_prepared")

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self._encoding = conn.info.encoding
        # psycopg's own loader, so that created_at comes back as get_job() returns it (in the
        # session's time zone).
        loader = conn.adapters.get_loader(TIMESTAMPTZ_OID, Format.BINARY)
        assert loader is not None
        self._load_timestamptz = loader(TIMESTAMPTZ_OID, conn).load
        self._prepared = False

    def insert(self, request: JobRequest) -> tuple[int, datetime]:
        """The new job's id and created_at; raises psycopg.Error."""
        encoding = self._encoding
        params = [
            request.queue.encode(encoding),
            request.task_name.encode(encoding),
            request.args_json.encode(encoding),
            request.kwargs_json.encode(encoding),
            b"%d" % request.priority,
            b"%d" % request.max_attempts,
        ]
        if not self._prepared:
            self._prepare()
        pgconn = self._conn.pgconn
        result = pgconn.exec_prepared(NAME, params, None, 1)
        if result.status == ExecStatus.FATAL_ERROR and _missing_statement(result):
            # Dropped on the server (DEALLOCATE ALL, DISCARD ALL): nothing ran, so again.
            self._prepare()
            result = pgconn.exec_prepared(NAME, params, None, 1)
        if result.status != ExecStatus.TUPLES_OK:
            raise self._error(result)
        id_ = result.get_value(0, 0)
        created_at = result.get_value(0, 1)
        assert id_ is not None and created_at is not None
        return int.from_bytes(id_, "big", signed=True), self._load_timestamptz(created_at)

    def _prepare(self) -> None:
        result = self._conn.pgconn.prepare(NAME, STATEMENT)
        if result.status == ExecStatus.FATAL_ERROR and _already_prepared(result):
            result = self._conn.pgconn.exec_(b"DEALLOCATE " + NAME)
            if result.status == ExecStatus.COMMAND_OK:
                result = self._conn.pgconn.prepare(NAME, STATEMENT)
        if result.status != ExecStatus.COMMAND_OK:
            raise self._error(result)
        self._prepared = True

    def _error(self, result: Any) -> psycopg.Error:
        if self._conn.pgconn.status == ConnStatus.BAD:
            # The connection is gone (psycopg raises the same class for it).
            return psycopg.OperationalError(result.get_error_message(self._encoding))
        return errors.error_from_result(result, self._encoding)


def _sqlstate(result: Any) -> str:
    state = result.error_field(DiagnosticField.SQLSTATE)
    return state.decode() if state else ""


def _missing_statement(result: Any) -> bool:
    return _sqlstate(result) == "26000"  # invalid_sql_statement_name


def _already_prepared(result: Any) -> bool:
    return _sqlstate(result) == "42P05"  # duplicate_prepared_statement
