"""inspect.queues: depths from the hot table, recent outcomes and pickup waits from
pgqueue_stats (written here by hand, as workers flush them), pauses and live workers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgqueue import rollup
from pgqueue.inspect import queues
from tests.integration.inspect_rows import (
    add_job,
    add_stats,
    add_worker,
    histogram,
    wait_past_restart_grace,
)


@pytest.fixture
def other_session(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A second session, holding workers' advisory locks as their own sessions would."""
    with psycopg.connect(dsn, autocommit=True) as session:
        yield session


def by_name(conn: psycopg.Connection[Any]) -> dict[str, queues.QueueStatus]:
    return {q.name: q for q in queues.queue_status(conn).queues}


def test_depths_split_ready_scheduled_running_and_waiting(conn: psycopg.Connection[Any]) -> None:
    add_job(conn, queue="mail", run_in=-90)  # due 90 s ago: the oldest ready
    add_job(conn, queue="mail", run_in=-5)
    add_job(conn, queue="mail", run_in=3600)  # a countdown: scheduled
    add_job(conn, queue="mail", status="running", started_ago=1, attempts=1)
    add_job(conn, queue="other", run_in=60)
    add_job(conn, queue="other", status="waiting", run_in=-120)  # a workflow step: not ready

    found = by_name(conn)

    mail = found["mail"]
    assert (mail.ready, mail.scheduled, mail.running, mail.waiting) == (2, 1, 1, 0)
    assert mail.oldest_ready_age is not None and 90 <= mail.oldest_ready_age < 120
    other = found["other"]
    assert (other.ready, other.scheduled, other.running, other.waiting) == (0, 1, 0, 1)
    assert other.oldest_ready_age is None


def test_recent_outcomes_fall_in_their_windows(conn: psycopg.Connection[Any]) -> None:
    add_stats(conn, "mail", "succeeded", 3, buckets_ago=0)  # this bucket: every window
    add_stats(conn, "mail", "succeeded", 2, buckets_ago=0)  # a second worker's flush
    add_stats(conn, "mail", "failed", 1, buckets_ago=0)
    add_stats(conn, "mail", "succeeded", 10, buckets_ago=12)  # 2 minutes ago: 5m and 15m
    add_stats(conn, "mail", "retried", 4, buckets_ago=12)
    add_stats(conn, "mail", "failed", 7, buckets_ago=60)  # 10 minutes ago: 15m only
    add_stats(conn, "mail", "succeeded", 1000, buckets_ago=120)  # 20 minutes ago: none

    mail = by_name(conn)["mail"]

    assert mail.last_1m == queues.Outcomes(succeeded=5, failed=1)
    assert mail.last_5m == queues.Outcomes(succeeded=15, failed=1, retried=4)
    assert mail.last_15m == queues.Outcomes(succeeded=15, failed=8, retried=4)
    # Jobs that ended in the five-minute window (a retried attempt did not end its job), per
    # second of what that window covers: the buckets that began in the last 300 s.
    assert 16 / 300 <= mail.throughput <= 16 / 290


def test_pickup_wait_percentiles_come_from_the_summed_histograms(
    conn: psycopg.Connection[Any],
) -> None:
    fast = [0.004] * 60
    slow = [0.8] * 40
    add_stats(conn, "mail", "succeeded", 60, buckets_ago=1, waits=fast)
    add_stats(conn, "mail", "failed", 40, buckets_ago=3, waits=slow)
    add_stats(conn, "mail", "succeeded", 500, buckets_ago=40, waits=[3000.0] * 500)  # too old

    mail = by_name(conn)["mail"]

    summed = [a + b for a, b in zip(histogram(fast), histogram(slow), strict=True)]
    assert mail.wait_p50 == rollup.quantile(0.5, summed)
    assert mail.wait_p95 == rollup.quantile(0.95, summed)
    assert mail.wait_p50 is not None and mail.wait_p50 <= 0.005
    assert mail.wait_p95 is not None and 0.5 < mail.wait_p95 <= 1.0


def test_a_queue_with_nothing_recent_has_no_rates(conn: psycopg.Connection[Any]) -> None:
    add_job(conn, queue="idle")

    idle = by_name(conn)["idle"]

    assert idle.last_15m == queues.Outcomes()
    assert idle.throughput == 0
    assert idle.wait_p50 is None and idle.wait_p95 is None


def test_queues_come_from_jobs_pauses_stats_and_live_workers(
    conn: psycopg.Connection[Any], other_session: psycopg.Connection[Any]
) -> None:
    add_job(conn, queue="with-jobs")
    conn.execute(
        "INSERT INTO pgqueue_queues (name, paused_at, paused_by) VALUES "
        "('paused-empty', now(), 'ops@laptop'), ('resumed', NULL, NULL)"
    )
    add_stats(conn, "stats-only", "succeeded", 1, buckets_ago=30)
    add_worker(conn, "live", ["served", "with-jobs"], heartbeat_ago=10, locked_by=other_session)
    # Its session lock is gone and its heartbeat is old: a dead worker nobody removed yet.
    add_worker(conn, "dead", ["dead-only"], heartbeat_ago=10)
    wait_past_restart_grace(conn)

    found = by_name(conn)

    assert sorted(found) == ["paused-empty", "resumed", "served", "stats-only", "with-jobs"]
    assert found["paused-empty"].paused
    assert found["paused-empty"].paused_by == "ops@laptop"
    assert found["paused-empty"].paused_at is not None
    assert not found["resumed"].paused
    assert found["served"].workers == 1
    assert found["with-jobs"].workers == 1
    assert found["stats-only"].workers == 0


def test_outcomes_this_pgqueue_does_not_know_are_left_out(conn: psycopg.Connection[Any]) -> None:
    add_stats(conn, "mail", "succeeded", 2)
    add_stats(conn, "mail", "teleported", 9)

    assert by_name(conn)["mail"].last_1m == queues.Outcomes(succeeded=2)


def test_an_empty_database_has_no_queues(conn: psycopg.Connection[Any]) -> None:
    report = queues.queue_status(conn)
    assert report.queues == ()
    assert report.at is not None
