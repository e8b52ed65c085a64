"""The process pool never blocks the worker's event loop, even while a child whose pipe
closed takes its time to exit."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import pgqueue
from tests.conftest import WorkerThread, wait_until
from tests.integration import process_pool_loop_app as loop_app

StartWorker = Callable[..., WorkerThread]


@pytest.fixture
def pool_app(dsn: str) -> Iterator[pgqueue.App]:
    loop_app.app.set_dsn(dsn)
    yield loop_app.app
    loop_app.app.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_loop_runs_on_while_a_child_that_closed_its_pipe_lingers(
    pool_app: pgqueue.App, start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker(
        pool_app,
        pool="process",
        app_path="tests.integration.process_pool_loop_app:app",
        concurrency=2,
    )
    # The async job waits on the loop for the lingering one to close its pipe, then looks.
    looker = loop_app.is_process_running.delay(str(tmp_path))
    wait_until(lambda: looker.refresh().status is pgqueue.JobStatus.RUNNING, timeout=60)
    lingering = loop_app.leave_the_pipe_and_linger.delay(str(tmp_path))
    try:
        # The worker sees the pipe close and waits for that child to exit; the loop must run
        # on meanwhile, so the looker sees the child still running.
        assert looker.wait(timeout=90) is True
    finally:
        (tmp_path / "go").write_text("")
    with pytest.raises(pgqueue.JobFailed):
        lingering.wait(timeout=90)
