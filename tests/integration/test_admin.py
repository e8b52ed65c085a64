"""The write side of operations (pgqueue.admin): retry, cancel and delete jobs by id, retry
failed jobs by filter, pause and resume queues; each change guarded, each id answered."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

import pgqueue
from pgqueue import admin, queries
from pgqueue.admin import JobResult
from pgqueue.claim import Position, claim_params, parse_enqueued, rewind
from pgqueue.schema import NOTIFY_ENQUEUED
from tests.conftest import WorkerThread, wait_until

StartWorker = Callable[..., WorkerThread]


def _row(conn: psycopg.Connection[Any], job_id: int) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT *, status::text AS status FROM pgqueue_all_jobs WHERE id = %s", (job_id,)
        ).fetchone()
    assert row is not None
    return row


def _in_hot_table(conn: psycopg.Connection[Any], job_id: int) -> bool:
    return bool(conn.execute("SELECT 1 FROM pgqueue_jobs WHERE id = %s", (job_id,)).fetchone())


def _finish(conn: psycopg.Connection[Any], job_id: int, status: str, **columns: Any) -> None:
    """End a queued job by hand as `status`, as if a worker (id 99) had run its attempt."""
    conn.execute(
        f"""
        WITH ended AS (DELETE FROM pgqueue_jobs WHERE id = %(id)s RETURNING *)
        {
            queries._archive(
                "ended",
                "%(status)s",
                "CAST(%(error)s AS jsonb)",
                "CAST(%(result)s AS jsonb)",
            )
        }
        """,
        {"id": job_id, "status": status, "error": None, "result": None},
    )
    conn.execute(
        "UPDATE pgqueue_finished_jobs SET worker_id = 99, attempts = max_attempts,"
        " started_at = finished_at - interval '1 second',"
        " error = COALESCE(CAST(%(error)s AS jsonb), error),"
        " result = COALESCE(CAST(%(result)s AS jsonb), result),"
        " expires_at = %(expires_at)s WHERE id = %(id)s",
        {
            "id": job_id,
            "error": columns.get("error"),
            "result": columns.get("result"),
            "expires_at": columns.get("expires_at"),
        },
    )


FAILURE = '{"type": "ValueError", "message": "boom", "traceback": "Traceback..."}'


@pytest.fixture
def noop(app: pgqueue.App) -> pgqueue.Task[Any, Any]:
    @app.task(max_attempts=2)
    def noop(n: int = 0) -> int:
        return n

    return noop


# -- retry ------------------------------------------------------------------------------------


def test_retry_runs_a_failed_job_again_under_its_id_with_its_history_kept(
    app: pgqueue.App,
    conn: psycopg.Connection[Any],
    start_worker: StartWorker,
    noop: pgqueue.Task[Any, Any],
) -> None:
    job = noop.delay(7)
    _finish(conn, job.id, "failed", error=FAILURE)
    before = _row(conn, job.id)

    assert admin.retry(conn, [job.id]) == [JobResult(job.id, "done", "queued")]
    row = _row(conn, job.id)
    assert _in_hot_table(conn, job.id)
    assert (row["status"], row["attempts"], row["max_attempts"]) == ("queued", 0, 2)
    assert row["worker_id"] is row["error"] is row["result"] is row["finished_at"] is None
    assert row["started_at"] is None
    assert row["created_at"] == before["created_at"] and row["run_at"] > before["run_at"]
    [entry] = row["history"]
    assert entry == {
        "attempt": 2,
        "worker_id": 99,
        "started_at": entry["started_at"],
        "ended_at": entry["ended_at"],
        "outcome": "failed",
        "error": before["error"],
    }
    assert datetime.fromisoformat(entry["ended_at"]) == before["finished_at"]
    assert datetime.fromisoformat(entry["started_at"]) == before["started_at"]

    start_worker(app)
    assert app.get_job(job.id).wait(timeout=30) == 7
    row = _row(conn, job.id)
    assert (row["status"], row["attempts"], len(row["history"])) == ("succeeded", 1, 1)


def test_retry_of_a_job_retried_before_keeps_every_earlier_attempt(
    conn: psycopg.Connection[Any], noop: pgqueue.Task[Any, Any]
) -> None:
    job = noop.delay()
    conn.execute(
        'UPDATE pgqueue_jobs SET history = \'[{"attempt": 1, "outcome": "retried"}]\''
        " WHERE id = %s",
        (job.id,),
    )
    _finish(conn, job.id, "cancelled", result='{"partial": true}')
    admin.retry(conn, [job.id])
    history = _row(conn, job.id)["history"]
    assert [(h["attempt"], h["outcome"]) for h in history] == [(1, "retried"), (2, "cancelled")]
    assert history[1]["result"] == {"partial": True}


def test_retry_of_a_cancelled_job_drops_its_deadline(
    conn: psycopg.Connection[Any], noop: pgqueue.Task[Any, Any]
) -> None:
    job = noop.delay()
    _finish(conn, job.id, "cancelled", expires_at=datetime.now(timezone.utc) - timedelta(hours=1))
    assert admin.retry(conn, [job.id]) == [JobResult(job.id, "done", "queued")]
    row = _row(conn, job.id)
    assert row["expires_at"] is None and row["cancel_requested_at"] is None


def test_retry_answers_each_id_and_changes_only_finished_unsuccessful_jobs(
    conn: psycopg.Connection[Any], noop: pgqueue.Task[Any, Any]
) -> None:
    queued, running, succeeded, failed = (noop.delay(n).id for n in range(4))
    conn.execute("UPDATE pgqueue_jobs SET status = 'running' WHERE id = %s", (running,))
    _finish(conn, succeeded, "succeeded", result="1")
    _finish(conn, failed, "failed", error=FAILURE)
    before = {i: _row(conn, i) for i in (queued, running, succeeded)}

    ids = [queued, running, succeeded, failed, 10**9, 0, -3, 2**70, failed]
    assert admin.retry(conn, ids) == [
        JobResult(queued, "wrong_state", "queued"),
        JobResult(running, "wrong_state", "running"),
        JobResult(succeeded, "wrong_state", "succeeded"),
        JobResult(failed, "done", "queued"),
        JobResult(10**9, "not_found", None),
        JobResult(0, "not_found", None),
        JobResult(-3, "not_found", None),
        JobResult(2**70, "not_found", None),
    ]
    assert {i: _row(conn, i) for i in before} == before


def test_retry_wakes_workers_with_where_the_jobs_sort(
    dsn: str, conn: psycopg.Connection[Any], noop: pgqueue.Task[Any, Any]
) -> None:
    jobs = [noop.apply_async(args=(n,), priority=n % 2) for n in range(4)]
    for job in jobs:
        _finish(conn, job.id, "failed", error=FAILURE)
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_ENQUEUED}")
        assert [r.result for r in admin.retry(conn, [j.id for j in jobs])] == ["done"] * 4
        notes = [parse_enqueued(n.payload) for n in listener.notifies(timeout=2, stop_after=2)]
    run_at = _row(conn, jobs[0].id)["run_at"].timestamp()
    # One notification per queue and priority (the four jobs share run_at).
    assert sorted((n.queue, n.priority, n.later) for n in notes) == [
        ("default", 0, False),
        ("default", 1, False),
    ]
    assert all(abs((n.run_at or 0) - run_at) < 0.001 for n in notes)


def test_retry_inside_a_transaction_that_rolls_back_changes_nothing(
    dsn: str, conn: psycopg.Connection[Any], noop: pgqueue.Task[Any, Any]
) -> None:
    job = noop.delay()
    _finish(conn, job.id, "failed", error=FAILURE)
    with psycopg.connect(dsn) as caller:
        assert admin.retry(caller, [job.id])[0].result == "done"
        caller.rollback()
    assert _row(conn, job.id)["status"] == "failed"


def _waiting_for_a_lock(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND datname = current_database()"
    ).fetchone()
    return bool(row and row[0])


def test_two_retries_of_one_job_at_once_run_it_once(
    dsn: str, conn: psycopg.Connection[Any], noop: pgqueue.Task[Any, Any]
) -> None:
    job = noop.delay()
    _finish(conn, job.id, "failed", error=FAILURE)
    results: list[list[JobResult]] = []
    with psycopg.connect(dsn) as first, psycopg.connect(dsn, autocommit=True) as second:
        assert admin.retry(first, [job.id])[0].result == "done"  # not committed yet
        other = threading.Thread(target=lambda: results.append(admin.retry(second, [job.id])))
        other.start()
        wait_until(lambda: _waiting_for_a_lock(conn), what="the second retry to wait")
        first.commit()
        other.join(30)
    assert results == [[JobResult(job.id, "wrong_state", "queued")]]
    assert len(_row(conn, job.id)["history"]) == 1


def test_a_retry_racing_a_prune_finds_no_job(
    dsn: str, conn: psycopg.Connection[Any], noop: pgqueue.Task[Any, Any]
) -> None:
    job = noop.delay()
    _finish(conn, job.id, "failed", error=FAILURE)
    results: list[list[JobResult]] = []
    with psycopg.connect(dsn) as pruner, psycopg.connect(dsn, autocommit=True) as operator:
        pruner.execute("DELETE FROM pgqueue_finished_jobs WHERE id = %s", (job.id,))
        other = threading.Thread(target=lambda: results.append(admin.retry(operator, [job.id])))
        other.start()
        wait_until(lambda: _waiting_for_a_lock(conn), what="the retry to wait")
        pruner.commit()
        other.join(30)
    assert results == [[JobResult(job.id, "not_found", None)]]
    assert conn.execute("SELECT count(*) FROM pgqueue_all_jobs").fetchone() == (0,)


def test_retry_failed_takes_every_failed_job_matching_the_filters_in_batches(
    app: pgqueue.App, conn: psycopg.Connection[Any], noop: pgqueue.Task[Any, Any]
) -> None:
    @app.task
    def other() -> None: ...

    failed = [noop.delay(n).id for n in range(5)]
    in_other_queue = noop.apply_async(queue="elsewhere").id
    of_other_task = other.delay().id
    cancelled = noop.delay().id
    old = noop.delay().id
    for job_id in [*failed, in_other_queue, of_other_task, old]:
        _finish(conn, job_id, "failed", error=FAILURE)
    _finish(conn, cancelled, "cancelled")
    conn.execute(
        "UPDATE pgqueue_finished_jobs SET finished_at = now() - interval '2 hours' WHERE id = %s",
        (old,),
    )

    results = admin.retry_failed(conn, task=noop.name, queue="default", since=3600, batch=2)
    assert results == [JobResult(i, "done", "queued") for i in failed]
    statuses = {i: _row(conn, i)["status"] for i in (in_other_queue, of_other_task, cancelled, old)}
    assert statuses == {
        in_other_queue: "failed",
        of_other_task: "failed",
        cancelled: "cancelled",
        old: "failed",
    }
    assert admin.retry_failed(conn, task=noop.name, queue="default", since=3600) == []
    # No filter: every failed job.
    assert [r.id for r in admin.retry_failed(conn)] == sorted([in_other_queue, of_other_task, old])


def test_retry_failed_refuses_a_window_that_is_not_positive(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(pgqueue.ConfigurationError, match="positive"):
        admin.retry_failed(conn, since=0)


# -- cancel and delete ------------------------------------------------------------------------


def test_cancel_answers_each_id(
    conn: psycopg.Connection[Any], noop: pgqueue.Task[Any, Any]
) -> None:
    queued, running, finished = (noop.delay(n).id for n in range(3))
    conn.execute("UPDATE pgqueue_jobs SET status = 'running' WHERE id = %s", (running,))
    _finish(conn, finished, "succeeded", result="2")
    assert admin.cancel(conn, [queued, running, finished, 12345], reason="operator") == [
        JobResult(queued, "done", "cancelled"),
        JobResult(running, "done", "running"),
        JobResult(finished, "wrong_state", "succeeded"),
        JobResult(12345, "not_found", None),
    ]
    row = _row(conn, queued)
    assert (row["status"], row["error"]["message"]) == ("cancelled", "operator")
    assert _row(conn, running)["cancel_requested_at"] is not None


def test_delete_removes_finished_jobs_and_refuses_the_others(
    conn: psycopg.Connection[Any], noop: pgqueue.Task[Any, Any]
) -> None:
    queued, running, succeeded, failed = (noop.delay(n).id for n in range(4))
    conn.execute("UPDATE pgqueue_jobs SET status = 'running' WHERE id = %s", (running,))
    _finish(conn, succeeded, "succeeded", result="1")
    _finish(conn, failed, "failed", error=FAILURE)
    assert admin.delete(conn, [queued, running, succeeded, failed, 777]) == [
        JobResult(queued, "wrong_state", "queued"),
        JobResult(running, "wrong_state", "running"),
        JobResult(succeeded, "done", "succeeded"),
        JobResult(failed, "done", "failed"),
        JobResult(777, "not_found", None),
    ]
    remaining = {row[0] for row in conn.execute("SELECT id FROM pgqueue_all_jobs")}
    assert remaining == {queued, running}


# -- pause and resume -------------------------------------------------------------------------


def _claim(
    conn: psycopg.Connection[Any], queue: str, after: list[Position] | None = None
) -> set[int]:
    params = claim_params([queue], 100, 1, {queue: after} if after else None)
    return {row[0] for row in conn.execute(queries.CLAIM_JOBS, params).fetchall()}


def test_a_paused_queue_is_not_claimed_from_but_takes_jobs_until_resumed(
    conn: psycopg.Connection[Any], noop: pgqueue.Task[Any, Any]
) -> None:
    conn.execute(
        "INSERT INTO pgqueue_workers (name, hostname, pid, queues, concurrency)"
        " VALUES ('w', 'h', 1, '{default}', 1)"
    )
    first = noop.delay().id
    paused = admin.pause(conn, "default", by="ops@laptop")
    assert (paused.changed, paused.paused, paused.known, paused.paused_by) == (
        True,
        True,
        True,
        "ops@laptop",
    )
    assert paused.paused_at is not None
    second = noop.delay().id  # enqueueing goes on
    assert _claim(conn, "default") == set()

    again = admin.pause(conn, "default", by="someone else")
    assert (again.changed, again.paused_at, again.paused_by) == (
        False,
        paused.paused_at,
        "ops@laptop",
    )

    resumed = admin.resume(conn, "default")
    assert (resumed.changed, resumed.paused) == (True, False)
    assert _claim(conn, "default") == {first, second}
    assert admin.resume(conn, "default").changed is False
    row = conn.execute(
        "SELECT paused_at, paused_by FROM pgqueue_queues WHERE name = 'default'"
    ).fetchone()
    assert row == (None, None)


def test_a_queue_nobody_knows_may_be_paused_and_says_so(conn: psycopg.Connection[Any]) -> None:
    result = admin.pause(conn, "tomorrow")
    assert (result.changed, result.paused, result.known, result.paused_by) == (
        True,
        True,
        False,
        None,
    )
    # Known from then on (it has a row), and still paused.
    assert admin.pause(conn, "tomorrow").known is True
    unknown = admin.resume(conn, "never-heard-of")
    assert (unknown.changed, unknown.known) == (False, False)


@pytest.mark.parametrize("name", ["", "   ", "a@b", "x" * 101])
def test_a_queue_name_is_one_a_job_could_have(conn: psycopg.Connection[Any], name: str) -> None:
    for action in (admin.pause, admin.resume):
        with pytest.raises(pgqueue.ConfigurationError, match="invalid queue name"):
            action(conn, name)
    assert conn.execute("SELECT count(*) FROM pgqueue_queues").fetchone() == (0,)


def test_resume_moves_every_worker_position_back_before_every_waiting_job(
    dsn: str, conn: psycopg.Connection[Any], noop: pgqueue.Task[Any, Any]
) -> None:
    """A worker whose positions are past every job (it claimed newer jobs before the pause,
    and the older ones were rescued or retried while its notifications were lost) reads the
    whole queue again after the resume's notifications, in every priority."""
    ids = {noop.apply_async(args=(p,), priority=p).id for p in (-5, 0, 0, 3, 9)}
    later = noop.apply_async(priority=1, countdown=3600).id
    admin.pause(conn, "default")
    far = datetime.now(timezone.utc) + timedelta(days=1)
    positions: dict[int, Position] = {0: (0, far, 2**62), 3: (3, far, 2**62)}
    assert _claim(conn, "default", list(positions.values())) == set()

    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_ENQUEUED}")
        assert admin.resume(conn, "default").changed
        notes = [parse_enqueued(n.payload) for n in listener.notifies(timeout=2, stop_after=5)]
    assert sorted((n.priority, n.later) for n in notes) == [
        (-5, False),
        (0, False),
        (1, True),
        (3, False),
        (9, False),
    ]
    for note in notes:
        assert note.queue == "default" and note.run_at is not None and note.priority is not None
        if not note.later:
            rewind(positions, note.priority, datetime.fromtimestamp(note.run_at, timezone.utc))
    assert _claim(conn, "default", list(positions.values())) == ids
    assert later not in ids


def test_resuming_an_empty_queue_sends_nothing(dsn: str, conn: psycopg.Connection[Any]) -> None:
    admin.pause(conn, "empty")
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_ENQUEUED}")
        assert admin.resume(conn, "empty").changed
        conn.execute(f"NOTIFY {NOTIFY_ENQUEUED}, 'marker'")
        payloads = [n.payload for n in listener.notifies(timeout=2, stop_after=1)]
    assert payloads == ["marker"]
