"""Bulk enqueue: `task.delay_many(...)` writes many jobs with one COPY.

Every call is validated and serialised first (a bad one writes nothing), then ids are
reserved in one round trip together with the database's clock, the rows are streamed with
COPY, and one NOTIFY wakes the workers, all in one transaction: the caller's, with
`connection=`, or one of pgqueue's own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg

from pgqueue import _json, queries
from pgqueue.enqueue import JobRequest, _translate, build_request

if TYPE_CHECKING:
    from pgqueue.tasks import Task


@dataclass(frozen=True)
class BulkRequest:
    """Validated jobs of one task with shared options: `template` holds the options, `rows`
    each job's serialised (args, kwargs)."""

    template: JobRequest
    rows: list[tuple[str, str]]


def build_bulk_request(
    task: Task[Any, Any],
    calls: Iterable[Sequence[Any] | Mapping[str, Any]],
    *,
    countdown: float | timedelta | None = None,
    eta: datetime | None = None,
    priority: int | None = None,
    queue: str | None = None,
    expires: float | timedelta | datetime | None = None,
) -> BulkRequest:
    """Each call is a tuple/list of positional arguments or a dict of keyword arguments."""
    template = build_request(
        task,
        (),
        None,
        countdown=countdown,
        eta=eta,
        priority=priority,
        queue=queue,
        expires=expires,
    )
    rows = []
    for index, call in enumerate(calls):
        # Each row is kept as its COPY text fields (args, then kwargs): JSON escapes every
        # control character, so only the backslash needs COPY's escaping.
        if isinstance(call, Mapping):
            kwargs = _json.dumps(dict(call), "task arguments", f"call {index} kwargs")
            rows.append(("[]", kwargs.replace("\\", "\\\\")))
        elif isinstance(call, (list, tuple)):
            args = _json.dumps(call, "task arguments", f"call {index} args") if call else "[]"
            rows.append((args.replace("\\", "\\\\"), "{}"))
        else:
            raise TypeError(
                f"delay_many takes a tuple/list of positional arguments or a dict of keyword "
                f"arguments per job; call {index} is a {type(call).__name__}"
            )
    return BulkRequest(template, rows)


COPY_CHUNK_ROWS = 2000


def _copy_chunks(request: BulkRequest, ids: list[int], now: datetime) -> Iterator[str]:
    """The rows as COPY text, a few thousand rows per chunk; the columns every job shares
    are formatted once."""
    t = request.template
    run_at = t.eta or (now + timedelta(seconds=t.countdown) if t.countdown else now)
    expires_at = t.expires_at or (now + timedelta(seconds=t.expires_in) if t.expires_in else None)
    shared = "\t".join(
        (
            _copy_text(t.queue),
            _copy_text(t.task_name),
            str(t.priority),
            run_at.isoformat(),
            str(t.max_attempts),
            expires_at.isoformat() if expires_at else "\\N",
        )
    )
    rows = request.rows
    for start in range(0, len(rows), COPY_CHUNK_ROWS):
        chunk_ids = ids[start : start + COPY_CHUNK_ROWS]
        chunk_rows = rows[start : start + COPY_CHUNK_ROWS]
        yield "".join(
            f"{job_id}\t{args}\t{kwargs}\t{shared}\n"
            for job_id, (args, kwargs) in zip(chunk_ids, chunk_rows, strict=True)
        )


def _copy_text(value: str) -> str:
    """A text value as a field of COPY's text format."""
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def _payload(request: BulkRequest, now: datetime) -> str:
    """The jobs' notification: where they sort and whether they are due later (see
    queries._enqueued); every job of the call shares its queue, priority and run_at."""
    t = request.template
    run_at = t.eta or (now + timedelta(seconds=t.countdown) if t.countdown else now)
    later = "@later" if run_at > now else ""
    return f"{t.queue}@{run_at.timestamp()!r}@{t.priority}{later}"


def copy_jobs(conn: psycopg.Connection[Any], request: BulkRequest) -> list[int]:
    """COPY the jobs on a sync psycopg connection, in its current transaction."""
    if not request.rows:
        return []
    try:
        row = conn.execute(queries.RESERVE_JOB_IDS, {"n": len(request.rows)}).fetchone()
        assert row is not None
        now, ids = row
        with conn.cursor() as cur, cur.copy(queries.COPY_JOBS) as copy:
            for chunk in _copy_chunks(request, ids, now):
                copy.write(chunk)
        conn.execute(queries.NOTIFY_ENQUEUED_PAYLOAD, {"payload": _payload(request, now)})
    except psycopg.Error as exc:
        raise _translate(exc) from exc
    return list(ids)


async def acopy_jobs(conn: psycopg.AsyncConnection[Any], request: BulkRequest) -> list[int]:
    """Async twin of `copy_jobs`."""
    if not request.rows:
        return []
    try:
        cur = await conn.execute(queries.RESERVE_JOB_IDS, {"n": len(request.rows)})
        row = await cur.fetchone()
        assert row is not None
        now, ids = row
        async with conn.cursor() as copy_cur, copy_cur.copy(queries.COPY_JOBS) as copy:
            for chunk in _copy_chunks(request, ids, now):
                await copy.write(chunk)
        await conn.execute(queries.NOTIFY_ENQUEUED_PAYLOAD, {"payload": _payload(request, now)})
    except psycopg.Error as exc:
        raise _translate(exc) from exc
    return list(ids)


def psycopg_connection(connection: Any) -> psycopg.Connection[Any]:
    """The psycopg connection under a psycopg or SQLAlchemy (sync) connection or session."""
    if isinstance(connection, psycopg.Connection):
        return connection
    module = type(connection).__module__
    if module.startswith("sqlalchemy") and not module.startswith("sqlalchemy.ext.asyncio"):
        sa_connection = connection.connection() if hasattr(connection, "get_bind") else connection
        driver = sa_connection.connection.driver_connection
        if isinstance(driver, psycopg.Connection):
            return driver
        raise TypeError(
            "delay_many with SQLAlchemy needs the psycopg 3 driver (postgresql+psycopg://), "
            f"this connection uses {type(driver).__module__}"
        )
    if isinstance(connection, psycopg.AsyncConnection) or module.startswith("sqlalchemy"):
        raise TypeError("this connection is async: use `await task.adelay_many(...)` with it")
    raise TypeError(
        "connection= takes a psycopg 3 Connection or a SQLAlchemy Connection/Session, got "
        f"{module}.{type(connection).__qualname__}"
    )


async def apsycopg_connection(connection: Any) -> psycopg.AsyncConnection[Any]:
    """The psycopg AsyncConnection under a psycopg or SQLAlchemy async connection/session."""
    if isinstance(connection, psycopg.AsyncConnection):
        return connection
    module = type(connection).__module__
    if module.startswith("sqlalchemy.ext.asyncio"):
        sa_connection = (
            await connection.connection() if hasattr(connection, "get_bind") else connection
        )
        raw = await sa_connection.get_raw_connection()
        driver = raw.driver_connection
        if isinstance(driver, psycopg.AsyncConnection):
            return driver
        raise TypeError(
            "adelay_many with SQLAlchemy needs the psycopg 3 driver "
            f"(postgresql+psycopg_async://), this connection uses {type(driver).__module__}"
        )
    if isinstance(connection, psycopg.Connection) or module.startswith("sqlalchemy"):
        raise TypeError("this connection is sync: use `task.delay_many(...)` with it")
    raise TypeError(
        "connection= takes a psycopg 3 AsyncConnection or a SQLAlchemy AsyncConnection/"
        f"AsyncSession, got {module}.{type(connection).__qualname__}"
    )
