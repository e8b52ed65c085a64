"""The write side of operations: retry, cancel and delete jobs; pause and resume queues.

Every function runs on the caller's psycopg connection, inside its transaction if it has one
(like enqueueing with `connection=`), and every change is one guarded statement from queries.py:
a job changes only from the state the action expects, so an action can never overwrite what a
worker, a rescuer or another operator did meanwhile. Each function says what it did, per job
id or for the queue, for the command line (`pgqueue jobs retry | cancel | delete`, `pgqueue
queues pause | resume`) and the dashboard to show.

Retrying runs a finished job again under the same id: the attempt that ended it (its status,
error, result, worker and times) is appended to the job's `history`, and the job starts over
with no attempt counted. Only failed and cancelled jobs are retried: a job that succeeded is
refused (running it again would repeat its effects; enqueue a new job for that).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg

from pgqueue import queries
from pgqueue.config import validate_queue_name
from pgqueue.errors import ConfigurationError

Result = Literal["done", "not_found", "wrong_state"]

# Job ids are bigints: anything else names no job, and is not sent.
_MAX_ID = 2**63 - 1
# How many failed jobs `retry_failed` moves per statement: short locks, bounded WAL bursts.
RETRY_BATCH = 1000


@dataclass(frozen=True)
class JobResult:
    """What an action did to one job.

    `result` is "done", "not_found" (no such job: never enqueued, pruned or deleted) or
    "wrong_state" (the job is not in a state the action applies to). `status` is the job's
    status after the action when done ("queued" after a retry, "cancelled", or "running" for
    a running job whose worker was asked to cancel it; the status it had for a delete), the
    status it was found in when in the wrong state, and None when not found.
    """

    id: int
    result: Result
    status: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "result": self.result, "status": self.status}


@dataclass(frozen=True)
class QueueResult:
    """What a pause or resume did to a queue.

    `changed`: this call paused (or resumed) it; False when it was paused (or not paused)
    already. `paused`, `paused_at`, `paused_by`: its state now. `known`: some worker serves it
    (or did in the last day), jobs wait in it, a schedule fires into it, or it was paused or
    resumed before; a queue nobody knows yet may be paused all the same (before a deploy).
    """

    queue: str
    changed: bool
    paused: bool
    paused_at: datetime | None
    paused_by: str | None
    known: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "changed": self.changed,
            "paused": self.paused,
            "paused_at": self.paused_at,
            "paused_by": self.paused_by,
            "known": self.known,
        }


def _unique_ids(ids: Iterable[int]) -> list[int]:
    """The ids in the order given, each once."""
    return list(dict.fromkeys(int(i) for i in ids))


def _results(
    conn: psycopg.Connection[Any], ids: list[int], done: dict[int, str | None]
) -> list[JobResult]:
    """Per id, in order: done (with the status in `done`), or else where the job is now (a
    second statement, so a job the action found in the wrong state is told from a job that
    does not exist)."""
    rest = [i for i in ids if i not in done and 0 < i <= _MAX_ID]
    found: dict[int, str] = {}
    if rest:
        rows = conn.execute(queries.JOB_STATES, {"ids": rest}).fetchall()
        found = {row[0]: row[1] for row in rows}
    results = []
    for job_id in ids:
        if job_id in done:
            results.append(JobResult(job_id, "done", done[job_id]))
        elif job_id in found:
            results.append(JobResult(job_id, "wrong_state", found[job_id]))
        else:
            results.append(JobResult(job_id, "not_found", None))
    return results


def _valid(ids: list[int]) -> list[int]:
    return [i for i in ids if 0 < i <= _MAX_ID]


def retry(conn: psycopg.Connection[Any], ids: Iterable[int]) -> list[JobResult]:
    """Run failed or cancelled jobs again, under the same ids, in one statement.

    Each moves back to the queue, due now, with no attempt counted and no deadline
    (`expires_at`), its final attempt appended to its `history`; workers are woken at once.
    A job that succeeded, or has not finished, is in the wrong state.
    """
    wanted = _unique_ids(ids)
    done: dict[int, str | None] = {}
    if _valid(wanted):
        rows = conn.execute(queries.RETRY_JOBS, {"ids": _valid(wanted)}).fetchall()
        done = {row[0]: "queued" for row in rows}
    return _results(conn, wanted, done)


def retry_failed(
    conn: psycopg.Connection[Any],
    *,
    task: str | None = None,
    queue: str | None = None,
    since: float | None = None,
    batch: int = RETRY_BATCH,
) -> list[JobResult]:
    """Run again every job that failed (of `task`, in `queue`, finished within the last
    `since` seconds, when given), as `retry` does, `batch` jobs per statement in id order.

    On an autocommit connection each batch commits on its own. A job that fails again while
    this runs is not retried a second time.
    """
    if since is not None and since <= 0:
        raise ConfigurationError(f"since must be a positive number of seconds, got {since!r}")
    results: list[JobResult] = []
    after = 0
    while True:
        params = {"after": after, "task": task, "queue": queue, "since": since, "batch": batch}
        rows = conn.execute(queries.RETRY_FAILED_JOBS, params).fetchall()
        ids = sorted(row[0] for row in rows)
        results.extend(JobResult(job_id, "done", "queued") for job_id in ids)
        # Read on after the last one moved (ids only grow: a job that fails again is behind
        # us); none moved means none is left (or the rest are being retried by another).
        if not ids:
            return results
        after = ids[-1]


def cancel(
    conn: psycopg.Connection[Any], ids: Iterable[int], reason: str = "cancelled on request"
) -> list[JobResult]:
    """Cancel jobs, one guarded statement each (the one `Job.cancel()` runs): a queued job
    ends CANCELLED at once (status "cancelled"); a running one's worker is told to stop it
    (status "running"). A finished job is in the wrong state."""
    wanted = _unique_ids(ids)
    done: dict[int, str | None] = {}
    for job_id in _valid(wanted):
        row = conn.execute(queries.CANCEL_JOB, {"id": job_id, "message": reason}).fetchone()
        if row is not None:
            done[job_id] = "cancelled" if row[2] == "cancelled" else "running"
    return _results(conn, wanted, done)


def delete(conn: psycopg.Connection[Any], ids: Iterable[int]) -> list[JobResult]:
    """Delete finished jobs (status: the one each had). A queued or running job is in the
    wrong state: cancel it first."""
    wanted = _unique_ids(ids)
    done: dict[int, str | None] = {}
    if _valid(wanted):
        rows = conn.execute(queries.DELETE_FINISHED_JOBS, {"ids": _valid(wanted)}).fetchall()
        done = {row[0]: row[1] for row in rows}
    return _results(conn, wanted, done)


def _known(conn: psycopg.Connection[Any], queue: str) -> bool:
    row = conn.execute(queries.QUEUE_KNOWN, {"name": queue}).fetchone()
    return bool(row and row[0])


def pause(conn: psycopg.Connection[Any], queue: str, by: str | None = None) -> QueueResult:
    """Pause `queue` fleet-wide: from this commit on no worker starts a job of it (running
    jobs finish); enqueueing and periodic ticks go on. It stays paused until `resume`,
    whatever workers restart. `by` is recorded (who paused it). Pausing a paused queue
    changes nothing; a queue no one knows yet may be paused (before a deploy)."""
    queue = validate_queue_name(queue)
    known = _known(conn, queue)
    row = conn.execute(queries.PAUSE_QUEUE, {"name": queue, "by": by}).fetchone()
    if row is None:  # paused by a concurrent call that has not committed: it will be
        return QueueResult(queue, False, True, None, None, known)
    return QueueResult(queue, bool(row[0]), True, row[1], row[2], known)


def resume(conn: psycopg.Connection[Any], queue: str) -> QueueResult:
    """Resume a paused queue and wake, by NOTIFY, every worker that serves it (they read it
    from its start). A queue that is not paused is left alone (`changed` False)."""
    queue = validate_queue_name(queue)
    known = _known(conn, queue)
    row = conn.execute(queries.RESUME_QUEUE, {"name": queue}).fetchone()
    return QueueResult(queue, row is not None, False, None, None, known)
