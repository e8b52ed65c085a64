"""Where each claim starts: after the last one, and from the start once per interval."""

from __future__ import annotations

from datetime import datetime, timezone

import pgqueue
from pgqueue.config import WorkerSettings
from pgqueue.worker import FULL_CLAIM_INTERVAL, Worker

POSITION = (0, datetime(2026, 1, 1, tzinfo=timezone.utc), 42)


def _worker() -> Worker:
    return Worker(pgqueue.App(dsn="postgresql://unused"), WorkerSettings(queues=("busy", "idle")))


def test_each_queue_is_read_from_its_start_first_then_from_its_position() -> None:
    worker = _worker()
    assert worker._claim_positions() == ({}, True)
    worker._positions["busy"] = POSITION  # the claim took jobs from "busy" only
    # "idle" has no position because it never had a job: reading it is not a full read, and
    # must not count as one when full reads are timed.
    assert worker._claim_positions() == ({"busy": POSITION}, False)


def test_slow_full_reads_are_spaced_out() -> None:
    worker = _worker()
    worker._claim_positions()
    worker._positions["busy"] = POSITION
    for queue in worker.queues:  # the last full read was 2 intervals ago...
        worker._full_claim_at[queue] -= 2 * FULL_CLAIM_INTERVAL
    worker._full_claim_seconds = FULL_CLAIM_INTERVAL  # ...and took a whole interval
    assert worker._claim_positions() == ({"busy": POSITION}, False)
    worker._full_claim_seconds = 0.001
    assert worker._claim_positions() == ({}, True)
