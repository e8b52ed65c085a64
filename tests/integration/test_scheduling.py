"""When jobs run: priority order, and not before their countdown or eta."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pgqueue
from tests.conftest import WorkerThread

StartWorker = Callable[..., WorkerThread]


def test_higher_priority_jobs_run_first(app: pgqueue.App, start_worker: StartWorker) -> None:
    order: list[str] = []

    @app.task
    def record(label: str) -> None:
        order.append(label)

    # Enqueued lowest first, all before a worker exists, so only priority decides.
    jobs = [
        record.apply_async(args=("low",), priority=-5),
        record.apply_async(args=("normal",)),
        record.apply_async(args=("urgent",), priority=100),
        record.apply_async(args=("high",), priority=10),
    ]
    start_worker(app, concurrency=1)
    app.wait_all(jobs, timeout=15)
    assert order == ["urgent", "high", "normal", "low"]


def test_job_with_countdown_does_not_start_before_its_run_at(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    @app.task
    def later() -> str:
        return "ran"

    start_worker(app)
    job = later.apply_async(countdown=1.0)
    assert job.run_at is not None and job.created_at is not None
    assert job.run_at - job.created_at == timedelta(seconds=1)
    assert job.wait(timeout=15) == "ran"
    assert job.started_at is not None
    assert job.started_at >= job.run_at


def test_job_with_eta_runs_at_that_time(app: pgqueue.App, start_worker: StartWorker) -> None:
    @app.task
    def at_eta() -> str:
        return "ran"

    start_worker(app)
    eta = datetime.now(timezone.utc) + timedelta(seconds=1)
    job = at_eta.apply_async(eta=eta)
    assert job.run_at == eta
    assert job.wait(timeout=15) == "ran"
    assert job.started_at is not None
    assert job.started_at >= eta
