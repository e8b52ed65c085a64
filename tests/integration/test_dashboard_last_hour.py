"""dashboard.data.last_hour: each minute of the overview's charts, read from the stats rows
(written here by hand, as workers flush them)."""

from __future__ import annotations

from typing import Any

import psycopg

from pgqueue.dashboard.data import last_hour
from tests.integration.inspect_rows import add_stats

Conn = psycopg.Connection[Any]


def test_a_minute_adds_up_the_outcomes_and_waits_of_every_queue(conn: Conn) -> None:
    add_stats(conn, "mail", "succeeded", 3, waits=[0.01] * 3)
    add_stats(conn, "mail", "retried", 2, waits=[0.01] * 2)
    add_stats(conn, "bills", "failed", 1, waits=[2.0])
    add_stats(conn, "bills", "failed", 1, waits=[2.0])  # another worker's flush
    add_stats(conn, "mail", "succeeded", 50, buckets_ago=370, waits=[9.0] * 50)  # > 1 h ago
    row = conn.execute("SELECT date_trunc('minute', max(bucket)), now() FROM pgqueue_stats")
    minute, now = row.fetchone() or (None, None)

    minutes = last_hour(conn, now)

    assert len(minutes) == 60 and minutes[-1].at <= now
    (seen,) = [m for m in minutes if m.at == minute]
    assert seen.ended == {"succeeded": 3, "failed": 2, "retried": 2, "cancelled": 0}
    assert 0.005 < (seen.wait["p50"] or 0) <= 0.01
    assert 1.0 < (seen.wait["p99"] or 0) <= 2.5
    assert seen.duration == {"p50": None, "p95": None, "p99": None}
    quiet = [m for m in minutes if m.at != minute]
    assert all(sum(m.ended.values()) == 0 and m.wait["p50"] is None for m in quiet)
