"""Insert jobs: validate and serialise first, then one INSERT (+ NOTIFY) on the right connection.

Everything that can be refused is refused before any SQL runs, so a bad call writes nothing.
With `connection=`, the INSERT joins that connection's current transaction and pgqueue never
commits it; without, pgqueue uses its own autocommit connection.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import tuple_row

from pgqueue import _json, queries
from pgqueue.config import validate_priority, validate_queue_name
from pgqueue.errors import ConfigurationError, DatabaseUnavailable, SchemaNotMigrated
from pgqueue.limits import checked_concurrency_key

if TYPE_CHECKING:
    from pgqueue.tasks import Task
    from pgqueue.unique import UniqueOptions


@dataclass(slots=True)
class JobRequest:
    """A validated, serialised job, ready to insert (read-only once built)."""

    queue: str
    task_name: str
    args_json: str
    kwargs_json: str
    priority: int
    eta: datetime | None
    countdown: float | None
    max_attempts: int
    expires_at: datetime | None = None
    expires_in: float | None = None
    # The job's headers as JSON (an object), None for none: most jobs.
    headers_json: str | None = None
    # Its unique key and how it is unique (pgqueue.unique), None for most jobs: a keyed job
    # is written by pgqueue.unique's statements, never by the two above.
    unique: UniqueOptions | None = None
    # A job of a task with fleet-wide limits (pgqueue.limits), and its concurrency key.
    limited: bool = False
    concurrency_key: str | None = None

    @property
    def due_now(self) -> bool:
        """Due at once, never expiring, without headers or limits: INSERT_JOB_NOW, the
        lean statement, inserts it."""
        return (
            self.eta is None
            and self.countdown is None
            and self.expires_at is None
            and self.expires_in is None
            and self.headers_json is None
            and not self.limited
        )

    @property
    def statement(self) -> str:
        return queries.INSERT_JOB_NOW if self.due_now else queries.INSERT_JOB

    def params(self) -> dict[str, Any]:
        """The statement's parameters."""
        params = {
            "queue": self.queue,
            "task_name": self.task_name,
            "args": self.args_json,
            "kwargs": self.kwargs_json,
            "priority": self.priority,
            "max_attempts": self.max_attempts,
        }
        if not self.due_now:
            params["eta"] = self.eta
            params["countdown"] = self.countdown
            params["expires_at"] = self.expires_at
            params["expires_in"] = self.expires_in
            params["headers"] = self.headers_json
            params["limited"] = True if self.limited else None
            params["concurrency_key"] = self.concurrency_key
        return params

    def job_row(self, returned: Sequence[Any]) -> dict[str, Any]:
        """The new job's row: what the statement returned (INSERT_JOB_NOW: id, created_at;
        INSERT_JOB: id, run_at, created_at, expires_at), completed with what this request
        already knows."""
        if self.due_now:
            job_id, created_at = returned[:2]
            run_at, expires_at = created_at, None  # both now(): one transaction's clock
        else:
            job_id, run_at, created_at, expires_at = returned[:4]
        return {
            "id": job_id,
            "queue": self.queue,
            "task_name": self.task_name,
            "status": "queued",
            "priority": self.priority,
            "attempts": 0,
            "max_attempts": self.max_attempts,
            "args": _json.loads(self.args_json),
            "kwargs": _json.loads(self.kwargs_json),
            "run_at": run_at,
            "created_at": created_at,
            "expires_at": expires_at,
            "headers": _json.loads(self.headers_json) if self.headers_json is not None else None,
        }


def build_request(
    task: Task[Any, Any],
    args: Sequence[Any] | None = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    countdown: float | timedelta | None = None,
    eta: datetime | None = None,
    priority: int | None = None,
    queue: str | None = None,
    expires: float | timedelta | datetime | None = None,
    headers: Mapping[str, Any] | None = None,
    concurrency_key: str | None = None,
) -> JobRequest:
    """Check every argument and serialise it; raises before anything is written."""
    if args is None:  # accepted, as Celery does
        args = ()
    if isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
        raise TypeError(f"args must be a list or tuple, got {type(args).__name__}")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise TypeError(f"kwargs must be a dict, got {type(kwargs).__name__}")
    if countdown is not None and eta is not None:
        raise ConfigurationError("pass countdown or eta, not both")
    if isinstance(countdown, timedelta):
        countdown = countdown.total_seconds()
    if countdown is not None:
        if isinstance(countdown, bool) or not isinstance(countdown, (int, float)):
            raise TypeError(f"countdown must be seconds (a number) or a timedelta: {countdown!r}")
        if countdown < 0 or not math.isfinite(countdown):
            raise ConfigurationError(f"countdown must be a finite number >= 0, got {countdown}")
    if eta is not None:
        if not isinstance(eta, datetime):
            raise TypeError(f"eta must be a datetime, got {type(eta).__name__}")
        if eta.tzinfo is None:
            raise ConfigurationError(
                "eta must be timezone-aware (e.g. datetime.now(timezone.utc) + timedelta(...)); "
                "a naive datetime is ambiguous"
            )
    expires_at, expires_in = _expiry(expires)
    concurrency_key = checked_concurrency_key(task, concurrency_key)
    return JobRequest(
        expires_at=expires_at,
        expires_in=expires_in,
        # The task's own queue and priority were validated when it was declared.
        queue=task.queue if queue is None else validate_queue_name(queue),
        task_name=task.name,
        args_json=_json.dumps(list(args), "task arguments", "args") if args else "[]",
        kwargs_json=_json.dumps(dict(kwargs), "task arguments", "kwargs") if kwargs else "{}",
        priority=task.priority if priority is None else validate_priority(priority),
        eta=eta,
        countdown=float(countdown) if countdown is not None else None,
        max_attempts=task.retry_policy.max_attempts,
        headers_json=headers_json(headers) if headers else None,
        limited=task.limits is not None,
        concurrency_key=concurrency_key,
    )


def headers_json(headers: Mapping[str, Any]) -> str:
    """A job's headers as stored: a JSON object with string keys (TypeError otherwise)."""
    if not isinstance(headers, Mapping):
        raise TypeError(f"headers must be a dict, got {type(headers).__name__}")
    for key in headers:
        if not isinstance(key, str):
            raise TypeError(f"header names must be strings, got {key!r}")
    return _json.dumps(dict(headers), "job headers", "headers")


def _expiry(expires: float | timedelta | datetime | None) -> tuple[datetime | None, float | None]:
    """`expires=`: seconds or a timedelta from now (database clock), or an aware datetime."""
    if expires is None:
        return None, None
    if isinstance(expires, datetime):
        if expires.tzinfo is None:
            raise ConfigurationError(
                "expires must be timezone-aware when it is a datetime "
                "(e.g. datetime.now(timezone.utc) + timedelta(minutes=5))"
            )
        return expires, None
    seconds = expires.total_seconds() if isinstance(expires, timedelta) else expires
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"expires takes seconds, a timedelta or a datetime, got {expires!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigurationError(f"expires must be a positive number of seconds, got {expires!r}")
    return None, float(seconds)


# What `connection=` may be: each kind runs pgqueue's statements through the same object the
# caller runs theirs through, so that the job joins the transaction its owner sees.
PSYCOPG, SQLALCHEMY = "psycopg", "sqlalchemy"


def connection_kind(connection: Any, *, is_async: bool) -> str:
    """PSYCOPG or SQLALCHEMY for a connection of the wanted flavour; TypeError for anything
    else, saying what to pass instead."""
    psycopg_type = psycopg.AsyncConnection if is_async else psycopg.Connection
    if isinstance(connection, psycopg_type):
        return PSYCOPG
    if isinstance(connection, (psycopg.Connection, psycopg.AsyncConnection)):
        raise _wrong_flavour(is_async)
    if "sqlalchemy" not in sys.modules:  # then it cannot be one of SQLAlchemy's objects
        raise _unsupported(connection)
    import sqlalchemy as sa
    from sqlalchemy.orm import Session, scoped_session

    # Subclasses count (Flask-SQLAlchemy's and SQLModel's sessions). The asyncio extension is
    # loaded by whoever made an async object; importing it here would need greenlet, which
    # SQLAlchemy 2.1 no longer installs, and break enqueueing on a sync Session without it.
    sa_async = sys.modules.get("sqlalchemy.ext.asyncio")
    engines = (sa.Engine, sa_async.AsyncEngine) if sa_async is not None else (sa.Engine,)
    if isinstance(connection, engines):
        raise TypeError(
            "connection= takes a connection or session holding your transaction, not an "
            "Engine: pass the Connection of `with engine.begin() as conn:` or a Session "
            "(or call delay() to let pgqueue commit the job itself)"
        )
    sync_types = (sa.Connection, Session, scoped_session)
    async_types = (
        (sa_async.AsyncConnection, sa_async.AsyncSession, sa_async.async_scoped_session)
        if sa_async is not None
        else ()
    )
    if isinstance(connection, async_types if is_async else sync_types):
        return SQLALCHEMY
    if isinstance(connection, sync_types + async_types):
        raise _wrong_flavour(is_async)
    raise _unsupported(connection)


def _wrong_flavour(is_async: bool) -> TypeError:
    if is_async:
        return TypeError(
            "this connection is sync: use `task.apply_async(...)`, `task.delay_many(...)` "
            "or `task.delay(...)` with it"
        )
    return TypeError(
        "this connection is async: use `await task.aapply_async(...)`, "
        "`await task.adelay_many(...)` or `await task.adelay(...)` with it"
    )


def _unsupported(connection: Any) -> TypeError:
    return TypeError(
        "connection= takes a psycopg 3 Connection/AsyncConnection or a SQLAlchemy "
        f"Connection/Session (sync or async), got {type(connection).__module__}."
        f"{type(connection).__qualname__}"
    )


def translate_error(
    exc: psycopg.Error,
    conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any] | None,
    *,
    owned: bool,
) -> Exception:
    """What to raise for a psycopg error met while running pgqueue's statements on `conn`.

    A missing table becomes SchemaNotMigrated and a lost connection DatabaseUnavailable
    (saying whether the work may have committed); every other error keeps its own class
    (SerializationFailure, DeadlockDetected, QueryCanceled, ...), so that the caller's retry
    loops see what the database said. `owned`: the connection is pgqueue's own (autocommit).
    """
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return SchemaNotMigrated(
            "pgqueue's tables are not in this database: run `pgqueue migrate` first"
        )
    if conn is None or not (conn.broken or conn.closed or _ends_the_session(exc)):
        return exc
    if owned or conn.autocommit:
        return lost_connection(exc, MAY_HAVE_COMMITTED)
    return lost_connection(exc, TRANSACTION_GONE)


def _ends_the_session(exc: psycopg.Error) -> bool:
    """A connection exception (class 08), or the server ending the session (shutdown, crash,
    idle timeout): the connection is gone even if libpq has not marked it so yet."""
    state = exc.sqlstate or ""
    return state.startswith("08") or state in ("57P01", "57P02", "57P05")


# What a lost connection means for the work in flight, as DatabaseUnavailable says it.
MAY_HAVE_COMMITTED = (
    "what was sent may or may not have been committed (before enqueueing a job again, look "
    "for it if a duplicate would matter)"
)
TRANSACTION_GONE = "your transaction is gone, and the jobs enqueued in it: nothing was committed"
UNKNOWN_TRANSACTION = (
    "your transaction is gone, and the jobs enqueued in it, unless the connection was in "
    "autocommit mode (then the last one may or may not have been committed)"
)


def lost_connection(exc: BaseException, meaning: str) -> DatabaseUnavailable:
    """DatabaseUnavailable for a connection lost mid-call; `meaning`: what became of the work."""
    return DatabaseUnavailable(
        f"the connection to the database was lost: {meaning}: " + " ".join(str(exc).split())
    )


def _raise_from_sqlalchemy(exc: Exception) -> None:
    """Raise what pgqueue raises for a SQLAlchemy error: the driver's psycopg error, kept as
    it is (SQLAlchemy's wrapper is its __cause__) but for a missing table or a lost
    connection, as on a psycopg connection."""
    orig = getattr(exc, "orig", None)
    if not isinstance(orig, psycopg.Error):
        return
    if getattr(exc, "connection_invalidated", False):
        raise lost_connection(orig, UNKNOWN_TRANSACTION) from exc
    raise translate_error(orig, None, owned=False) from exc


def _sqlalchemy_driver(connection: Any) -> Any:
    """The driver's connection under a sync SQLAlchemy connection or session. Statements run
    on it are in SQLAlchemy's transaction only once SQLAlchemy has begun one: run the first
    statement through SQLAlchemy."""
    sa_connection = connection.connection() if hasattr(connection, "get_bind") else connection
    return sa_connection.connection.driver_connection


async def _asqlalchemy_driver(connection: Any) -> Any:
    sa_connection = await connection.connection() if hasattr(connection, "get_bind") else connection
    return (await sa_connection.get_raw_connection()).driver_connection


def insert_job(connection: Any, request: JobRequest) -> dict[str, Any]:
    """INSERT one job on a sync psycopg or SQLAlchemy connection, in its current transaction."""
    if connection_kind(connection, is_async=False) == PSYCOPG:
        try:
            # A plain server-side cursor with tuple_row: the caller's cursor_factory (Django's
            # connections make client-side cursors, which return no binary results) and
            # row_factory (dict_row, class_row) are theirs, not ours.
            with psycopg.Cursor(connection, row_factory=tuple_row) as cur:
                row = cur.execute(request.statement, request.params(), binary=True).fetchone()
        except psycopg.Error as exc:
            raise translate_error(exc, connection, owned=False) from exc
        assert row is not None
        return request.job_row(row)
    import sqlalchemy as sa

    try:
        # Through SQLAlchemy, so that it begins (or joins) the transaction it tracks.
        result = connection.execute(
            sa.text(queries.as_sqlalchemy(request.statement)), request.params()
        )
        return request.job_row(tuple(result.one()))
    except sa.exc.DBAPIError as exc:
        _raise_from_sqlalchemy(exc)
        raise


async def ainsert_job(connection: Any, request: JobRequest) -> dict[str, Any]:
    """Async twin of `insert_job` for psycopg AsyncConnection and SQLAlchemy async objects."""
    if connection_kind(connection, is_async=True) == PSYCOPG:
        try:
            async with psycopg.AsyncCursor(connection, row_factory=tuple_row) as cur:
                await cur.execute(request.statement, request.params(), binary=True)
                row = await cur.fetchone()
        except psycopg.Error as exc:
            raise translate_error(exc, connection, owned=False) from exc
        assert row is not None
        return request.job_row(row)
    import sqlalchemy as sa

    try:
        result = await connection.execute(
            sa.text(queries.as_sqlalchemy(request.statement)), request.params()
        )
        return request.job_row(tuple(result.one()))
    except sa.exc.DBAPIError as exc:
        _raise_from_sqlalchemy(exc)
        raise
