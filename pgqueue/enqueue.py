"""Insert jobs: validate and serialise first, then one INSERT (+ NOTIFY) on the right connection.

Everything that can be refused is refused before any SQL runs, so a bad call writes nothing.
With `connection=`, the INSERT joins that connection's current transaction and pgqueue never
commits it; without, pgqueue uses its own autocommit connection.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg

from pgqueue import _json, queries
from pgqueue.config import validate_priority, validate_queue_name
from pgqueue.errors import ConfigurationError, DatabaseUnavailable, SchemaNotMigrated

if TYPE_CHECKING:
    from pgqueue.tasks import Task


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

    @property
    def due_now(self) -> bool:
        """Due at once and never expiring: INSERT_JOB_NOW, the lean statement, inserts it."""
        return (
            self.eta is None
            and self.countdown is None
            and self.expires_at is None
            and self.expires_in is None
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
    )


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


def _sqlalchemy_kind(connection: Any) -> str | None:
    """'sync' or 'async' for SQLAlchemy connections/sessions, None for anything else."""
    module = type(connection).__module__
    if not module.startswith("sqlalchemy"):
        return None
    return "async" if module.startswith("sqlalchemy.ext.asyncio") else "sync"


def _unsupported(connection: Any) -> TypeError:
    return TypeError(
        "connection= takes a psycopg 3 Connection/AsyncConnection or a SQLAlchemy "
        f"Connection/Session (sync or async), got {type(connection).__module__}."
        f"{type(connection).__qualname__}"
    )


def _translate(exc: psycopg.Error) -> Exception:
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return SchemaNotMigrated(
            "pgqueue's tables are not in this database: run `pgqueue migrate` first"
        )
    if isinstance(exc, psycopg.OperationalError):
        return DatabaseUnavailable(
            "could not enqueue, the database is unreachable; nothing was written: "
            + " ".join(str(exc).split())
        )
    return exc


def _unwrap_sqlalchemy_error(exc: Exception) -> Exception:
    orig = getattr(exc, "orig", None)
    if isinstance(orig, psycopg.Error):
        return _translate(orig)
    return exc


def insert_job(connection: Any, request: JobRequest) -> dict[str, Any]:
    """INSERT one job on a sync psycopg or SQLAlchemy connection, in its current transaction."""
    if isinstance(connection, psycopg.Connection):
        try:
            row = connection.execute(request.statement, request.params(), binary=True).fetchone()
        except psycopg.Error as exc:
            raise _translate(exc) from exc
        assert row is not None
        return request.job_row(row)
    kind = _sqlalchemy_kind(connection)
    if kind == "sync":
        import sqlalchemy as sa

        try:
            result = connection.execute(
                sa.text(queries.as_sqlalchemy(request.statement)), request.params()
            )
            return request.job_row(tuple(result.one()))
        except sa.exc.DBAPIError as exc:
            translated = _unwrap_sqlalchemy_error(exc)
            if translated is exc:
                raise
            raise translated from exc
    if kind == "async" or isinstance(connection, psycopg.AsyncConnection):
        raise TypeError(
            "this connection is async: use `await task.aapply_async(...)` or "
            "`await task.adelay(...)` with it"
        )
    raise _unsupported(connection)


async def ainsert_job(connection: Any, request: JobRequest) -> dict[str, Any]:
    """Async twin of `insert_job` for psycopg AsyncConnection and SQLAlchemy async objects."""
    if isinstance(connection, psycopg.AsyncConnection):
        try:
            cur = await connection.execute(request.statement, request.params(), binary=True)
            row = await cur.fetchone()
        except psycopg.Error as exc:
            raise _translate(exc) from exc
        assert row is not None
        return request.job_row(row)
    kind = _sqlalchemy_kind(connection)
    if kind == "async":
        import sqlalchemy as sa

        try:
            result = await connection.execute(
                sa.text(queries.as_sqlalchemy(request.statement)), request.params()
            )
            return request.job_row(tuple(result.one()))
        except sa.exc.DBAPIError as exc:
            translated = _unwrap_sqlalchemy_error(exc)
            if translated is exc:
                raise
            raise translated from exc
    if kind == "sync" or isinstance(connection, psycopg.Connection):
        raise TypeError(
            "this connection is sync: use `task.apply_async(...)` or `task.delay(...)` with it"
        )
    raise _unsupported(connection)
