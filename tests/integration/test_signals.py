"""Signals sent by a real worker: around each attempt, for rescues, at start and stop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import signals
from tests.conftest import WorkerThread, wait_until
from tests.integration.test_fencing_and_rescue import _claim_by_a_gone_worker

StartWorker = Callable[..., WorkerThread]
ALL = (
    "task_prerun",
    "task_postrun",
    "task_success",
    "task_failure",
    "task_retry",
    "task_rescued",
    "worker_ready",
    "worker_shutdown",
)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.thread_names: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, signal: signals.Signal, **kwargs: Any) -> None:
        with self._lock:
            self.events.append((signal.name, kwargs))
            self.thread_names.add(threading.current_thread().name)

    def of_job(self, job_id: int) -> list[str]:
        with self._lock:
            return [name for name, kw in self.events if kw.get("task_id") == job_id]

    def names(self) -> list[str]:
        with self._lock:
            return [name for name, _ in self.events]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recording = Recorder()
    for name in ALL:
        getattr(signals, name).connect(recording)
    yield recording
    for name in ALL:
        getattr(signals, name).disconnect(recording)


def test_a_worker_sends_each_attempts_signals_and_its_own(
    app: pgqueue.App, start_worker: StartWorker, recorder: Recorder
) -> None:
    @app.task(max_attempts=2, autoretry_for=(ValueError,), retry_backoff=False)
    def fails_twice() -> None:
        raise ValueError("nope")

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    worker = start_worker(app)
    ok = add.delay(2, 3)
    assert ok.wait(timeout=30) == 5
    bad = fails_twice.delay()
    with pytest.raises(pgqueue.JobFailed):
        bad.wait(timeout=30)
    wait_until(lambda: recorder.of_job(bad.id).count("task_postrun") == 2, what="postruns")
    assert recorder.of_job(ok.id) == ["task_prerun", "task_success", "task_postrun"]
    assert recorder.of_job(bad.id) == [
        "task_prerun",
        "task_retry",
        "task_postrun",
        "task_prerun",
        "task_failure",
        "task_postrun",
    ]
    success = next(kw for name, kw in recorder.events if name == "task_success")
    assert success["sender"] is add and success["result"] == 5
    assert success["job"].id == ok.id and success["job"].retries == 0
    failure = next(kw for name, kw in recorder.events if name == "task_failure")
    assert failure["error"]["type"] == "ValueError" and failure["job"].attempt == 2
    assert worker.stop() == 0
    names = recorder.names()
    assert names[0] == "worker_ready" and names[-1] == "worker_shutdown"
    ready = recorder.events[0][1]
    assert ready["sender"] is worker.worker
    # Sent on the worker's event loop, never on a task's thread.
    assert not any(name.startswith("pgqueue-task") for name in recorder.thread_names)


def test_a_raising_receiver_costs_no_job_its_outcome(
    app: pgqueue.App, start_worker: StartWorker, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    @app.task
    def double(x: int) -> int:
        return 2 * x

    for name in ALL:
        getattr(signals, name).connect(broken)
    try:
        with caplog.at_level(logging.ERROR, logger="pgqueue.signals"):
            worker = start_worker(app)
            jobs = [double.delay(n) for n in range(5)]
            assert [job.wait(timeout=30) for job in jobs] == [0, 2, 4, 6, 8]
            assert worker.stop() == 0
    finally:
        for name in ALL:
            getattr(signals, name).disconnect(broken)
    reported = [r.getMessage() for r in caplog.records if r.name == "pgqueue.signals"]
    # Once per signal (each is its own receiver slot), not once per job.
    assert sorted(m.split()[1].rstrip(":") for m in reported) == sorted(
        ["task_prerun", "task_success", "task_postrun", "worker_ready", "worker_shutdown"]
    )


def test_a_job_this_workers_maintenance_rescues_is_sent_as_rescued(
    app: pgqueue.App,
    conn: psycopg.Connection[Any],
    start_worker: StartWorker,
    recorder: Recorder,
) -> None:
    @app.task(max_attempts=3)
    def survives() -> str:
        return "ran again"

    job = survives.delay()
    _claim_by_a_gone_worker(conn)
    start_worker(app, rescue_interval=0.1)
    assert job.wait(timeout=30) == "ran again"
    rescued = [kw for name, kw in recorder.events if name == "task_rescued"]
    assert rescued[0]["task_id"] == job.id
    assert rescued[0]["task_name"] == survives.name
    assert rescued[0]["status"] == "queued"
