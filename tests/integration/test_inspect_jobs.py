"""inspect.jobs: listing across both job tables newest first, each filter, keyset pages that
neither skip nor repeat, the indexes the statements are shaped for, and one job in full."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgqueue.errors import ConfigurationError, JobNotFound
from pgqueue.inspect import jobs
from tests.integration.inspect_rows import (
    add_finished_job,
    add_job,
    add_past_worker,
    add_worker,
)

Conn = psycopg.Connection[Any]
BOOM = {"type": "ValueError", "message": "boom", "traceback": "Traceback (most recent call last):"}


def ids(page: jobs.JobPage) -> list[int]:
    return [job.id for job in page.jobs]


@pytest.fixture
def mixed(conn: Conn) -> dict[str, int]:
    """Jobs in both tables, ids interleaved, oldest first."""
    made = {}
    made["old_ok"] = add_finished_job(conn, "t.a", finished_ago=7200)
    made["old_failed"] = add_finished_job(
        conn, "t.b", status="failed", error=BOOM, finished_ago=5000
    )
    made["queued_late"] = add_job(conn, "t.a", queue="slow", run_in=3600, created_ago=4000)
    made["cancelled"] = add_finished_job(
        conn, "t.a", queue="slow", status="cancelled", finished_ago=30
    )
    made["running"] = add_job(
        conn, "t.b", status="running", started_ago=10, created_ago=3000, attempts=1
    )
    made["failed"] = add_finished_job(conn, "t.b", status="failed", error=BOOM, finished_ago=20)
    made["ok"] = add_finished_job(conn, "t.a", finished_ago=5)
    made["queued"] = add_job(conn, "t.c")
    return made


def test_jobs_of_both_tables_come_newest_first(conn: Conn, mixed: dict[str, int]) -> None:
    page = jobs.list_jobs(conn)

    assert ids(page) == sorted(mixed.values(), reverse=True)
    assert page.next_before is None
    by_id = {job.id: job for job in page.jobs}
    failed = by_id[mixed["failed"]]
    assert (failed.status, failed.error_type, failed.error_message) == (
        "failed",
        "ValueError",
        "boom",
    )
    assert by_id[mixed["running"]].status == "running"


def test_pages_follow_each_other_without_gaps_or_repeats(conn: Conn, mixed: dict[str, int]) -> None:
    seen: list[int] = []
    before = None
    pages = 0
    while True:
        page = jobs.list_jobs(conn, limit=3, before=before)
        seen += ids(page)
        pages += 1
        if page.next_before is None:
            break
        assert page.next_before == page.jobs[-1].id
        before = page.next_before
    assert seen == sorted(mixed.values(), reverse=True)
    assert pages == 3


def test_a_full_last_page_still_offers_a_next_one_that_is_empty(conn: Conn) -> None:
    made = [add_finished_job(conn) for _ in range(2)]

    page = jobs.list_jobs(conn, limit=2)
    assert page.next_before == min(made)
    assert jobs.list_jobs(conn, limit=2, before=page.next_before).jobs == ()


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"queue": "slow"}, ["cancelled", "queued_late"]),
        ({"task": "t.b"}, ["failed", "running", "old_failed"]),
        ({"statuses": ["failed"]}, ["failed", "old_failed"]),
        ({"statuses": ["failed", "queued"]}, ["queued", "failed", "queued_late", "old_failed"]),
        ({"statuses": ["running", "succeeded"]}, ["ok", "running", "old_ok"]),
        (
            {"statuses": ["succeeded", "failed", "cancelled"]},
            ["ok", "failed", "cancelled", "old_failed", "old_ok"],
        ),
        # Entered their status in the last minute: enqueued, started or finished.
        ({"since": 60}, ["queued", "ok", "failed", "running", "cancelled"]),
        ({"since": 60, "statuses": ["failed"]}, ["failed"]),
        ({"task": "t.a", "queue": "default"}, ["ok", "old_ok"]),
        ({"task": "t.nothing"}, []),
    ],
    ids=lambda value: str(value),
)
def test_filters(
    conn: Conn, mixed: dict[str, int], filters: dict[str, Any], expected: list[str]
) -> None:
    assert ids(jobs.list_jobs(conn, **filters)) == [mixed[name] for name in expected]


def test_bad_filters_are_refused_before_any_query() -> None:
    with pytest.raises(ConfigurationError, match="unknown job status 'done'"):
        jobs.list_statement(statuses=["done"])
    with pytest.raises(ConfigurationError, match="limit"):
        jobs.list_statement(limit=0)
    with pytest.raises(ConfigurationError, match="since"):
        jobs.list_statement(since=0)


def test_statuses_are_parsed_from_a_comma_separated_list() -> None:
    assert jobs.parse_statuses("failed, cancelled,failed") == ("failed", "cancelled")
    for bad in ("", "failed,bogus", ",", "FAILED"):
        with pytest.raises(ConfigurationError, match="queued, running, succeeded"):
            jobs.parse_statuses(bad)


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        ({}, "pgqueue_finished_jobs_pkey"),
        ({"statuses": ["failed"]}, "pgqueue_finished_jobs_unsuccessful_idx"),
        ({"statuses": ["failed", "cancelled"]}, "pgqueue_finished_jobs_unsuccessful_idx"),
        ({"task": "t.a"}, "pgqueue_finished_jobs_task_idx"),
        ({"since": 60}, "pgqueue_finished_jobs_finished_idx"),
    ],
    ids=lambda value: str(value),
)
def test_finished_jobs_are_listed_through_an_index(
    conn: Conn, filters: dict[str, Any], index: str
) -> None:
    # Which plan wins depends on the data (see docs/monitoring/read.md for the plans measured
    # on a million finished jobs); what must hold whatever the data is that an index can
    # answer each filter, so that none of them needs to read the whole table.
    sql, params = jobs.list_statement(
        statuses=filters.pop("statuses", ["succeeded", "failed", "cancelled"]), **filters
    )
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        conn.execute(
            "SET LOCAL enable_bitmapscan = off"
            if index != "pgqueue_finished_jobs_finished_idx"
            else "SELECT 1"
        )
        plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + sql, params, prepare=False))
    assert index in plan, plan
    assert "Seq Scan" not in plan, plan


def test_a_text_search_walks_newest_first_and_leaves_the_callers_settings(conn: Conn) -> None:
    old = add_finished_job(conn, "t.a", finished_ago=60)
    add_finished_job(conn, "t.a", finished_ago=30)
    new = add_job(conn, "t.a")
    for table, job_id in (("pgqueue_finished_jobs", old), ("pgqueue_jobs", new)):
        conn.execute(
            f"UPDATE {table} SET args = %s WHERE id = %s",
            (Jsonb(["order 7", "chargeback"]), job_id),
        )
    with conn.transaction():
        found = jobs.list_jobs(conn, text="ChargeBack", limit=1)
        assert ids(found) == [new]
        assert ids(jobs.list_jobs(conn, text="chargeback", before=found.next_before)) == [old]
        # Sorting is turned off for the search only, not for what the caller does next.
        assert conn.execute("SHOW enable_sort").fetchone() == ("on",)


# -- one job in full ---------------------------------------------------------------------


@pytest.fixture
def other_session(dsn: str) -> Iterator[Conn]:
    with psycopg.connect(dsn, autocommit=True) as session:
        yield session


def test_an_unknown_job_is_job_not_found(conn: Conn) -> None:
    with pytest.raises(JobNotFound, match="no job with id 12345"):
        jobs.job_detail(conn, 12345)


def test_a_queued_job_shows_every_field_and_no_attempt(conn: Conn) -> None:
    job_id = add_job(conn, "t.a", queue="mail", run_in=60)

    detail = jobs.job_detail(conn, job_id)

    assert (detail.id, detail.task_name, detail.queue, detail.status) == (
        job_id,
        "t.a",
        "mail",
        "queued",
    )
    assert detail.run_at > detail.created_at
    assert (detail.attempts, detail.max_attempts) == (0, 3)
    assert detail.worker is None and detail.lease is None and detail.schedule is None
    assert detail.attempt_history == ()


def test_a_jobs_headers_are_shown_in_either_table(conn: Conn) -> None:
    queued = add_job(conn, "t.a")
    finished = add_finished_job(conn, "t.a", finished_ago=5)
    conn.execute(
        'UPDATE pgqueue_jobs SET headers = \'{"traceparent": "00-ab-cd-01"}\' WHERE id = %s',
        (queued,),
    )
    conn.execute(
        'UPDATE pgqueue_finished_jobs SET headers = \'{"tenant": "acme"}\' WHERE id = %s',
        (finished,),
    )
    assert jobs.job_detail(conn, queued).headers == {"traceparent": "00-ab-cd-01"}
    assert jobs.job_detail(conn, finished).headers == {"tenant": "acme"}
    assert jobs.job_detail(conn, add_job(conn, "t.b")).headers is None


def test_a_running_job_shows_its_worker_and_its_attempt_under_way(
    conn: Conn, other_session: Conn
) -> None:
    worker = add_worker(conn, "busy-worker", locked_by=other_session)
    job_id = add_job(conn, "t.a", status="running", started_ago=3, worker_id=worker, attempts=1)

    detail = jobs.job_detail(conn, job_id)

    assert detail.worker is not None
    assert (detail.worker.name, detail.worker.state, detail.worker.pid) == (
        "busy-worker",
        "alive",
        4242,
    )
    assert detail.lease is not None
    (attempt,) = detail.attempt_history
    assert (attempt.attempt, attempt.outcome, attempt.worker) == (1, "running", detail.worker)
    assert attempt.ended_at is None


def test_a_finished_job_shows_each_attempt_with_its_worker(conn: Conn, other_session: Conn) -> None:
    live = add_worker(conn, "live-worker", locked_by=other_session)
    add_past_worker(conn, 901, "lost-worker", ended_ago=300, how="lost", rescued=1)
    add_past_worker(conn, 902, "stopped-worker", ended_ago=200, how="stopped")
    history = [
        {
            "attempt": 1,
            "worker_id": 901,
            "started_at": "2026-01-01T10:00:00+00:00",
            "ended_at": "2026-01-01T10:00:30+00:00",
            "outcome": "lost",
            "error": {"type": "WorkerLost", "message": "worker lost while running attempt 1 of 3"},
        },
        {
            "attempt": 2,
            "worker_id": 902,
            "started_at": "2026-01-01T10:01:00+00:00",
            "ended_at": "2026-01-01T10:01:02+00:00",
            "outcome": "retried",
            "error": BOOM,
        },
        {
            "attempt": 3,
            "worker_id": 555,  # pruned from pgqueue_past_workers since
            "started_at": "2026-01-01T10:02:00+00:00",
            "ended_at": "2026-01-01T10:02:01+00:00",
            "outcome": "retried",
            "error": BOOM,
        },
    ]
    job_id = add_finished_job(
        conn, "t.b", status="failed", attempts=4, worker_id=live, error=BOOM, history=history
    )

    detail = jobs.job_detail(conn, job_id)

    assert detail.error == BOOM
    assert detail.args == [1, "two"] and detail.kwargs == {"three": 3}
    assert [(a.attempt, a.outcome) for a in detail.attempt_history] == [
        (1, "lost"),
        (2, "retried"),
        (3, "retried"),
        (4, "failed"),
    ]
    workers = [a.worker for a in detail.attempt_history]
    assert [(w.name, w.state) if w else None for w in workers] == [
        ("lost-worker", "lost"),
        ("stopped-worker", "stopped"),
        (None, "unknown"),
        ("live-worker", "alive"),
    ]
    assert detail.attempt_history[0].started_at is not None
    assert detail.attempt_history[0].error == history[0]["error"]
    assert detail.attempt_history[-1].error == BOOM
    assert detail.worker == workers[-1]


def test_a_job_back_in_the_queue_after_a_retry_has_only_its_earlier_attempts(conn: Conn) -> None:
    job_id = add_job(conn, "t.a", run_in=30, started_ago=5, attempts=1)
    started = conn.execute(
        "SELECT started_at FROM pgqueue_jobs WHERE id = %s", (job_id,)
    ).fetchone()
    assert started is not None
    entry = {
        "attempt": 1,
        "worker_id": None,
        "started_at": started[0].isoformat(),
        "ended_at": started[0].isoformat(),
        "outcome": "retried",
        "error": BOOM,
    }
    conn.execute(
        "UPDATE pgqueue_jobs SET history = jsonb_build_array(%s::jsonb) WHERE id = %s",
        (Jsonb(entry), job_id),
    )

    detail = jobs.job_detail(conn, job_id)

    assert [(a.attempt, a.outcome) for a in detail.attempt_history] == [(1, "retried")]


def test_a_cancelled_job_that_never_ran_has_no_attempt(conn: Conn) -> None:
    job_id = add_finished_job(
        conn, status="cancelled", attempts=0, error={"type": "Cancelled", "message": "no"}
    )
    conn.execute("UPDATE pgqueue_finished_jobs SET started_at = NULL WHERE id = %s", (job_id,))

    assert jobs.job_detail(conn, job_id).attempt_history == ()


def test_a_periodic_job_names_its_schedule_even_once_removed(conn: Conn) -> None:
    conn.execute(
        "INSERT INTO pgqueue_periodic (name, task_name, cron, next_fire_at) "
        "VALUES ('nightly', 't.a', '0 3 * * *', now() + interval '1 hour')"
    )
    kept = add_finished_job(conn, "t.a", periodic_name="nightly", periodic_fire_at_ago=60)
    gone = add_finished_job(conn, "t.a", periodic_name="retired")

    schedule = jobs.job_detail(conn, kept).schedule
    assert schedule is not None
    assert (schedule.name, schedule.enabled) == ("nightly", True)
    assert schedule.spec is not None and "0 3 * * *" in schedule.spec
    assert schedule.fire_at is not None
    removed = jobs.job_detail(conn, gone).schedule
    assert removed is not None
    assert (removed.name, removed.spec, removed.fire_at) == ("retired", None, None)
