"""Bulk enqueue: `task.delay_many(...)` writes many jobs with one COPY.

Every call is validated and serialised first (a bad one writes nothing), then ids are
reserved in one round trip together with the database's clock, the rows are streamed with
COPY, and one NOTIFY wakes the workers. With `connection=`, all of it runs in the caller's
transaction (begun through the object passed, so that SQLAlchemy tracks it). Without, it runs
on pgqueue's own autocommit connection, where the COPY is one statement: every row or none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import tuple_row

from pgqueue import _json, queries
from pgqueue.enqueue import (
    PSYCOPG,
    JobRequest,
    _asqlalchemy_driver,
    _raise_from_sqlalchemy,
    _sqlalchemy_driver,
    build_request,
    connection_kind,
    translate_error,
)

if TYPE_CHECKING:
    from pgqueue.tasks import Task


@dataclass(frozen=True)
class BulkRequest:
    """Validated jobs of one task with shared options: `template` holds the options, `rows`
    each job's serialised (args, kwargs)."""

    template: JobRequest
    rows: list[tuple[str, str]]
    # Each job's unique key, for a task declared with unique=; None otherwise.
    keys: list[str] | None = None
    # Whether those keys are held while queued only (`unique_states=("queued",)`).
    queued_only: bool = False


def build_bulk_request(
    task: Task[Any, Any],
    calls: Iterable[Sequence[Any] | Mapping[str, Any]],
    *,
    countdown: float | timedelta | None = None,
    eta: datetime | None = None,
    priority: int | None = None,
    queue: str | None = None,
    expires: float | timedelta | datetime | None = None,
    headers: Mapping[str, Any] | None = None,
    key_of: Callable[[Sequence[Any], Mapping[str, Any]], str] | None = None,
    concurrency_key: str | None = None,
    queued_only: bool = False,
) -> BulkRequest:
    """Each call is a tuple/list of positional arguments or a dict of keyword arguments;
    `key_of` makes each job's unique key from them (a task declared with unique=), held while
    queued only with `queued_only`."""
    template = build_request(
        task,
        (),
        None,
        countdown=countdown,
        eta=eta,
        priority=priority,
        queue=queue,
        expires=expires,
        headers=headers,
        concurrency_key=concurrency_key,
    )
    rows = []
    keys: list[str] | None = [] if key_of is not None else None
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
        if key_of is not None:
            assert keys is not None
            is_kwargs = isinstance(call, Mapping)
            keys.append(key_of((), call) if is_kwargs else key_of(call, {}))  # type: ignore[arg-type]
    return BulkRequest(template, rows, keys, queued_only)


COPY_CHUNK_ROWS = 2000


def _copy_chunks(request: BulkRequest, ids: list[int], now: datetime) -> Iterator[str]:
    """The rows as COPY text, a few thousand rows per chunk; the columns every job shares
    are formatted once (the headers only when the jobs have some: see `_copy_statement`)."""
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
    if t.headers_json is not None:
        shared += "\t" + _copy_text(t.headers_json)
    if t.limited:
        key = t.concurrency_key
        shared += "\tt\t" + (_copy_text(key) if key is not None else "\\N")
    rows = request.rows
    for start in range(0, len(rows), COPY_CHUNK_ROWS):
        chunk_ids = ids[start : start + COPY_CHUNK_ROWS]
        chunk_rows = rows[start : start + COPY_CHUNK_ROWS]
        yield "".join(
            f"{job_id}\t{args}\t{kwargs}\t{shared}\n"
            for job_id, (args, kwargs) in zip(chunk_ids, chunk_rows, strict=True)
        )


def _copy_statement(request: BulkRequest) -> str:
    t = request.template
    if t.limited:
        if t.headers_json is None:
            return queries.COPY_LIMITED_JOBS
        return queries.COPY_LIMITED_JOBS_WITH_HEADERS
    if t.headers_json is None:
        return queries.COPY_JOBS
    return queries.COPY_JOBS_WITH_HEADERS


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


def copy_jobs(connection: Any, request: BulkRequest, *, owned: bool = False) -> list[int]:
    """COPY the jobs on a sync psycopg or SQLAlchemy connection (or session), in its current
    transaction; `owned`: pgqueue's own autocommit connection.

    No transaction block of pgqueue's: in autocommit, the COPY is one statement and commits
    all its rows or none (the ids reserved before it are only numbers), and the NOTIFY after
    it wakes workers for committed jobs. On the caller's connection, everything joins the
    transaction the caller holds.
    """
    kind = PSYCOPG if owned else connection_kind(connection, is_async=False)
    conn = connection if kind == PSYCOPG else _driver(_sqlalchemy_driver(connection), "")
    if not request.rows:
        return []
    try:
        now, ids = _reserve_ids(connection, kind, len(request.rows))
        with psycopg.Cursor(conn) as cur, cur.copy(_copy_statement(request)) as copy:
            for chunk in _copy_chunks(request, ids, now):
                copy.write(chunk)
        conn.execute(queries.NOTIFY_ENQUEUED_PAYLOAD, {"payload": _payload(request, now)})
    except psycopg.Error as exc:
        raise translate_error(exc, conn, owned=owned) from exc
    return list(ids)


def _reserve_ids(connection: Any, kind: str, n: int) -> tuple[datetime, list[int]]:
    """The database's clock and `n` new job ids. Run on the very object the caller gave, so
    that SQLAlchemy begins (or joins) the transaction it tracks: the COPY that follows on the
    driver's connection is then in it, and the caller's commit commits the jobs."""
    if kind == PSYCOPG:
        with psycopg.Cursor(connection, row_factory=tuple_row) as cur:
            row = cur.execute(queries.RESERVE_JOB_IDS, {"n": n}).fetchone()
        assert row is not None
        return row[0], row[1]
    import sqlalchemy as sa

    try:
        now, ids = connection.execute(
            sa.text(queries.as_sqlalchemy(queries.RESERVE_JOB_IDS)), {"n": n}
        ).one()
    except sa.exc.DBAPIError as exc:
        _raise_from_sqlalchemy(exc)
        raise
    return now, ids


async def acopy_jobs(connection: Any, request: BulkRequest, *, owned: bool = False) -> list[int]:
    """Async twin of `copy_jobs`."""
    kind = PSYCOPG if owned else connection_kind(connection, is_async=True)
    conn = connection if kind == PSYCOPG else _driver(await _asqlalchemy_driver(connection), "a")
    if not request.rows:
        return []
    try:
        now, ids = await _areserve_ids(connection, kind, len(request.rows))
        async with (
            psycopg.AsyncCursor(conn) as copy_cur,
            copy_cur.copy(_copy_statement(request)) as copy,
        ):
            for chunk in _copy_chunks(request, ids, now):
                await copy.write(chunk)
        await conn.execute(queries.NOTIFY_ENQUEUED_PAYLOAD, {"payload": _payload(request, now)})
    except psycopg.Error as exc:
        raise translate_error(exc, conn, owned=owned) from exc
    return list(ids)


async def _areserve_ids(connection: Any, kind: str, n: int) -> tuple[datetime, list[int]]:
    """Async twin of `_reserve_ids`."""
    if kind == PSYCOPG:
        async with psycopg.AsyncCursor(connection, row_factory=tuple_row) as cur:
            await cur.execute(queries.RESERVE_JOB_IDS, {"n": n})
            row = await cur.fetchone()
        assert row is not None
        return row[0], row[1]
    import sqlalchemy as sa

    try:
        result = await connection.execute(
            sa.text(queries.as_sqlalchemy(queries.RESERVE_JOB_IDS)), {"n": n}
        )
        now, ids = result.one()
    except sa.exc.DBAPIError as exc:
        _raise_from_sqlalchemy(exc)
        raise
    return now, ids


def _driver(driver: Any, prefix: str) -> Any:
    """The driver's connection under SQLAlchemy, which COPY needs to be psycopg 3's."""
    wanted = psycopg.AsyncConnection if prefix else psycopg.Connection
    if isinstance(driver, wanted):
        return driver
    url = "postgresql+psycopg_async://" if prefix else "postgresql+psycopg://"
    raise TypeError(
        f"{prefix}delay_many with SQLAlchemy needs the psycopg 3 driver ({url}), this "
        f"connection uses {type(driver).__module__}"
    )
