"""Jobs, listed and shown: `list_jobs` pages through queued, running and finished jobs newest
first with filters, and `job_detail` shows one job in full (every attempt, its worker, its
periodic schedule).

A listing reads each job table through an index that yields rows in id order (the primary key,
or the partial index of finished jobs that did not succeed), newest first, and stops at the
page's size: its cost follows the page, not the millions of finished jobs kept. The next page
starts below the last id shown (`before`), so pages neither skip nor repeat jobs as new ones
arrive. Each filter is a named condition added to the statement only when asked for, so that
the planner sees exactly the query it must answer.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgqueue import queries
from pgqueue.errors import ConfigurationError, JobNotFound
from pgqueue.job import FINISHED_STATUSES, JobStatus

Conn = psycopg.Connection[Any]

ACTIVE = ("waiting", "queued", "running")
FINISHED = tuple(sorted(s.value for s in FINISHED_STATUSES))
STATUSES = tuple(s.value for s in JobStatus)
MAX_LIMIT = 1000
# How much of an error message a listing carries (`job_detail` has all of it).
MESSAGE_PREVIEW = 200

# What a listing shows of a job: never its arguments, result or traceback, which may be large.
_LIST_COLUMNS = f"""id, queue, task_name, status::text AS status, priority, attempts,
    max_attempts, run_at, created_at, started_at, finished_at, worker_id,
    error->>'type' AS error_type, left(error->>'message', {MESSAGE_PREVIEW}) AS error_message"""

# One page of a job table, newest first; {filters} is the named conditions below, joined by AND.
LIST_QUEUED_AND_RUNNING = f"""
SELECT {_LIST_COLUMNS} FROM pgqueue_jobs WHERE {{filters}} ORDER BY id DESC LIMIT %(limit)s
"""
LIST_FINISHED = f"""
SELECT {_LIST_COLUMNS} FROM pgqueue_finished_jobs WHERE {{filters}}
ORDER BY id DESC LIMIT %(limit)s
"""
# Both tables' pages merged: each is read newest first, so the planner merges two short runs.
LIST_BOTH = """
SELECT * FROM (({active}) UNION ALL ({finished})) AS j ORDER BY id DESC LIMIT %(limit)s
"""

# The conditions a listing may add, by filter name.
FILTERS: Mapping[str, str] = {
    "queue": "queue = %(queue)s",
    "task": "task_name = %(task)s",
    # Spelled as literals (see _status_filter): a constant list lets the planner prove that
    # `failed` or `cancelled` alone is covered by the partial index of unsuccessful jobs.
    "status": "status IN ({statuses})",
    "before": "id < %(before)s",
    # Text anywhere in the arguments (a LIKE pattern made by `_contains`). No index helps:
    # the page stops at its size, so a common text is found fast, a rare one reads far
    # (list_jobs keeps the planner on an index walk in id order).
    "text": "(args::text || ' ' || kwargs::text) ILIKE %(text)s",
}
# `since`: the job entered its current status within the last `since` seconds: enqueued
# (queued), started (running) or finished (finished jobs; the index on finished_at).
SINCE_QUEUED_AND_RUNNING = """
CASE WHEN status = 'running' THEN started_at ELSE created_at END
    >= now() - %(since)s::float8 * interval '1 second'"""
SINCE_FINISHED = "finished_at >= now() - %(since)s::float8 * interval '1 second'"
# `until`: ... more than `until` seconds ago (with `since`, a time range).
UNTIL_QUEUED_AND_RUNNING = """
CASE WHEN status = 'running' THEN started_at ELSE created_at END
    < now() - %(until)s::float8 * interval '1 second'"""
UNTIL_FINISHED = "finished_at < now() - %(until)s::float8 * interval '1 second'"

# One job in full from whichever table holds it (one statement, one snapshot: a job moving
# between the tables is seen once).
_DETAIL_COLUMNS = """id, queue, task_name, args, kwargs, status::text AS status, priority,
    run_at, attempts, max_attempts, worker_id, result, error, created_at, started_at,
    finished_at, periodic_name, periodic_fire_at, expires_at, cancel_requested_at, history,
    headers, COALESCE(unique_key, queued_key) AS unique_key, progress, progress_at,
    concurrency_key, workflow_id"""
JOB_DETAIL = f"""
SELECT {_DETAIL_COLUMNS}, lease, now() AS at FROM pgqueue_jobs WHERE id = %(id)s
UNION ALL
SELECT {_DETAIL_COLUMNS}, NULL, now() FROM pgqueue_finished_jobs WHERE id = %(id)s
"""

# Sorting off until the end of the transaction (or SORT_RESTORE), and what it was before.
SORT_OFF = """
SELECT p.previous, set_config('enable_sort', 'off', true)
FROM (SELECT current_setting('enable_sort') AS previous OFFSET 0) AS p
"""
SORT_RESTORE = "SELECT set_config('enable_sort', %(previous)s, true)"

# Worker names by id, live or gone (stopped, lost): a worker leaves one table for the other in
# one statement, so an id is in one of them, or in neither once pruned.
WORKERS_BY_ID = """
SELECT id, name, hostname, pid, 'alive' AS state
FROM pgqueue_workers WHERE id = ANY(%(ids)s::int[])
UNION ALL
SELECT id, name, hostname, pid, ended_how
FROM pgqueue_past_workers WHERE id = ANY(%(ids)s::int[])
"""


@dataclass(frozen=True)
class JobSummary:
    """A job as a listing shows it."""

    id: int
    queue: str
    task_name: str
    status: str
    priority: int
    attempts: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker_id: int | None
    error_type: str | None
    error_message: str | None  # its first MESSAGE_PREVIEW characters


@dataclass(frozen=True)
class JobPage:
    """A page of jobs, newest first. `next_before` is the `before` of the next page, None when
    this one was not full (there is no next page)."""

    at: datetime | None  # the database's clock when read (None: nothing was read)
    jobs: tuple[JobSummary, ...]
    next_before: int | None


@dataclass(frozen=True)
class WorkerRef:
    """The worker an attempt ran on; `state` 'alive', 'stopped' or 'lost', or 'unknown' when
    the worker has been pruned from pgqueue_past_workers (after a day)."""

    id: int
    name: str | None
    hostname: str | None
    pid: int | None
    state: str


@dataclass(frozen=True)
class Attempt:
    """One attempt of a job, oldest first in JobDetail.attempt_history. `outcome` is
    'running' for the attempt under way, else succeeded, failed, cancelled, retried (failed,
    another attempt followed) or lost (its worker was lost; the job was rescued)."""

    attempt: int
    worker: WorkerRef | None
    started_at: datetime | None
    ended_at: datetime | None
    outcome: str
    error: dict[str, Any] | None
    result: Any


@dataclass(frozen=True)
class ScheduleRef:
    """The periodic schedule that made a job; `spec` None when it has been removed since."""

    name: str
    fire_at: datetime | None  # the tick it made the job for (None: `periodic run-now`)
    spec: str | None
    enabled: bool | None


@dataclass(frozen=True)
class JobDetail:
    """Every field of a job, with its attempts, worker and schedule resolved."""

    at: datetime  # the database's clock when read
    id: int
    queue: str
    task_name: str
    status: str
    priority: int
    args: list[Any]
    kwargs: dict[str, Any]
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None
    cancel_requested_at: datetime | None
    attempts: int
    max_attempts: int
    result: Any
    error: dict[str, Any] | None
    worker: WorkerRef | None  # of the latest attempt
    lease: int | None  # the fencing token of the claim running it (running jobs only)
    schedule: ScheduleRef | None
    attempt_history: tuple[Attempt, ...]  # every attempt, oldest first, the latest included
    headers: Any = None  # what the job carries apart from its arguments (a JSON object), or None
    unique_key: str | None = None  # its unique key (`unique_key=`, `@app.task(unique=...)`)
    progress: Any = None  # what the task last published (`set_progress`), or None
    progress_at: datetime | None = None  # when that progress was written
    concurrency_key: str | None = None  # its key under a per-key limit (`concurrency_key=`)
    workflow_id: int | None = None  # the workflow it is a step of (`pgqueue workflows show`)


def parse_statuses(text: str) -> tuple[str, ...]:
    """'failed,cancelled' -> ('failed', 'cancelled'); ConfigurationError on anything else."""
    statuses = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    bad = [s for s in statuses if s not in STATUSES]
    if bad or not statuses:
        what = (
            f"unknown job status {', '.join(map(repr, bad))}" if bad else f"no status in {text!r}"
        )
        raise ConfigurationError(
            f"{what}: use one or more of {', '.join(STATUSES)}, separated by commas"
        )
    return statuses


def _status_filter(statuses: Collection[str]) -> str:
    # Each value is one of STATUSES (checked by the caller), so it is safe as a literal.
    return FILTERS["status"].format(statuses=", ".join(f"'{s}'" for s in sorted(statuses)))


def list_statement(
    *,
    queue: str | None = None,
    task: str | None = None,
    statuses: Collection[str] = (),
    since: float | None = None,
    until: float | None = None,
    text: str | None = None,
    before: int | None = None,
    limit: int = 50,
) -> tuple[str, dict[str, Any]]:
    """The statement and parameters of `list_jobs` (apart, so that its plans can be read)."""
    bad = [s for s in statuses if s not in STATUSES]
    if bad:
        raise ConfigurationError(f"unknown job status {bad[0]!r}: use one of {STATUSES}")
    if not 1 <= limit <= MAX_LIMIT:
        raise ConfigurationError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    if since is not None and not since > 0:
        raise ConfigurationError(f"since must be more than 0 seconds, got {since}")
    if until is not None and not until >= 0:
        raise ConfigurationError(f"until must be 0 seconds or more, got {until}")
    params: dict[str, Any] = {
        "queue": queue,
        "task": task,
        "before": before,
        "since": since,
        "until": until,
        "text": _contains(text) if text else None,
        "limit": limit,
    }
    common = [
        FILTERS[name] for name in ("queue", "task", "before", "text") if params[name] is not None
    ]
    wanted = set(statuses)
    parts: dict[str, str] = {}
    for table, template, table_statuses, since_filter, until_filter in (
        (
            "active",
            LIST_QUEUED_AND_RUNNING,
            ACTIVE,
            SINCE_QUEUED_AND_RUNNING,
            UNTIL_QUEUED_AND_RUNNING,
        ),
        ("finished", LIST_FINISHED, FINISHED, SINCE_FINISHED, UNTIL_FINISHED),
    ):
        chosen = wanted & set(table_statuses) if wanted else set()
        if wanted and not chosen:
            continue  # no status asked for lives in this table
        filters = list(common)
        if chosen and chosen != set(table_statuses):
            filters.append(_status_filter(chosen))
        if since is not None:
            filters.append(since_filter)
        if until is not None:
            filters.append(until_filter)
        parts[table] = template.format(filters=" AND ".join(filters) or "true").strip()
    if len(parts) == 2:
        sql = LIST_BOTH.format(active=parts["active"], finished=parts["finished"])
    else:
        (sql,) = parts.values()
    return sql, params


def list_jobs(
    conn: Conn,
    *,
    queue: str | None = None,
    task: str | None = None,
    statuses: Collection[str] = (),
    since: float | None = None,
    until: float | None = None,
    text: str | None = None,
    before: int | None = None,
    limit: int = 50,
) -> JobPage:
    """A page of jobs, newest first: those of `queue`, of `task`, with one of `statuses`,
    that entered their current status within `since` seconds and more than `until` seconds
    ago, whose arguments contain `text` (case-insensitive), with an id below `before`."""
    sql, params = list_statement(
        queue=queue,
        task=task,
        statuses=statuses,
        since=since,
        until=until,
        text=text,
        before=before,
        limit=limit,
    )
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        # The planner cannot tell how many arguments hold a text and guesses a handful: it
        # would read every candidate row (the whole hot table, say) and sort them. An index
        # walk in id order stops at the page's size instead. Not with `until`: a range of the
        # past is read best through the index on finished_at.
        walk = bool(text) and until is None
        previous = cur.execute(SORT_OFF).fetchone() if walk else None
        # Not prepared: each filter's values (a status, a rare task) may want another plan.
        rows = cur.execute(sql, params, prepare=False).fetchall()
        if previous is not None:  # the caller's transaction may go on: as it was
            cur.execute(SORT_RESTORE, previous)
        at_row = cur.execute("SELECT now() AS at").fetchone()
    jobs = tuple(JobSummary(**row) for row in rows)
    next_before = jobs[-1].id if len(jobs) == limit else None
    return JobPage(at=at_row["at"] if at_row else None, jobs=jobs, next_before=next_before)


def _contains(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, its own wildcards taken literally. The
    arguments are searched as JSON text, so a quote or a backslash is looked for as JSON
    writes it."""
    encoded = json.dumps(text, ensure_ascii=False)[1:-1]
    escaped = encoded.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _workers(conn: Conn, ids: set[int]) -> dict[int, WorkerRef]:
    found = {
        row["id"]: WorkerRef(**row)
        for row in conn.cursor(row_factory=dict_row).execute(WORKERS_BY_ID, {"ids": list(ids)})
    }
    return {i: found.get(i, WorkerRef(i, None, None, None, "unknown")) for i in ids}


def _parse_time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _attempts(row: Mapping[str, Any], workers: Mapping[int, WorkerRef]) -> tuple[Attempt, ...]:
    """The history's attempts, then the row's own attempt if it is not the history's last
    (a job back in the queue has none; a job retried by an operator starts counting anew)."""
    history = [entry for entry in (row["history"] or []) if isinstance(entry, dict)]
    attempts = [
        Attempt(
            attempt=int(entry.get("attempt") or 0),
            worker=workers.get(entry["worker_id"]) if entry.get("worker_id") else None,
            started_at=_parse_time(entry.get("started_at")),
            ended_at=_parse_time(entry.get("ended_at")),
            outcome=str(entry.get("outcome")),
            error=entry.get("error"),
            result=entry.get("result"),
        )
        for entry in history
    ]
    has_own = row["status"] != "queued" and row["attempts"] > 0 and row["started_at"] is not None
    if has_own and attempts:
        last = attempts[-1]
        has_own = not (last.attempt == row["attempts"] and last.started_at == row["started_at"])
    if has_own:
        attempts.append(
            Attempt(
                attempt=row["attempts"],
                worker=workers.get(row["worker_id"]) if row["worker_id"] else None,
                started_at=row["started_at"],
                ended_at=row["finished_at"],
                outcome="running" if row["status"] == "running" else row["status"],
                error=row["error"],
                result=row["result"],
            )
        )
    return tuple(attempts)


def _schedule(conn: Conn, row: Mapping[str, Any]) -> ScheduleRef | None:
    if row["periodic_name"] is None:
        return None
    from pgqueue.schedule import Schedule

    with conn.cursor(row_factory=dict_row) as cur:
        found = cur.execute(queries.GET_SCHEDULE, {"name": row["periodic_name"]}).fetchone()
    spec: str | None = None
    if found is not None:
        try:
            spec = Schedule.from_row(found).spec
        except Exception:  # stored by an older pgqueue or by hand: name it all the same
            spec = (
                f"cron '{found['cron']}'" if found["cron"] else f"every {found['every_seconds']}s"
            )
    return ScheduleRef(
        name=row["periodic_name"],
        fire_at=row["periodic_fire_at"],
        spec=spec,
        enabled=found["enabled"] if found is not None else None,
    )


def job_detail(conn: Conn, job_id: int) -> JobDetail:
    """One job in full; JobNotFound if no job has this id (never enqueued, or pruned)."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(JOB_DETAIL, {"id": job_id}).fetchone()
        if row is None:
            raise JobNotFound(f"no job with id {job_id} (never enqueued, or pruned since)")
        ids = {entry.get("worker_id") for entry in row["history"] or [] if isinstance(entry, dict)}
        ids.add(row["worker_id"])
        workers = _workers(conn, {i for i in ids if isinstance(i, int)})
        schedule = _schedule(conn, row)
    return JobDetail(
        at=row["at"],
        id=row["id"],
        queue=row["queue"],
        task_name=row["task_name"],
        status=row["status"],
        priority=row["priority"],
        args=row["args"],
        kwargs=row["kwargs"],
        run_at=row["run_at"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        expires_at=row["expires_at"],
        cancel_requested_at=row["cancel_requested_at"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        result=row["result"],
        error=row["error"],
        worker=workers.get(row["worker_id"]) if row["worker_id"] else None,
        lease=row["lease"],
        schedule=schedule,
        attempt_history=_attempts(row, workers),
        headers=row["headers"],
        unique_key=row["unique_key"],
        progress=row["progress"],
        progress_at=row["progress_at"],
        concurrency_key=row["concurrency_key"],
        workflow_id=row["workflow_id"],
    )
