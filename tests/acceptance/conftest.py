"""Acceptance fixtures: real `pgqueue worker` processes on the test's own database.

Every process a test starts is killed at teardown, whatever happened, and its log is printed
(pytest shows it when the test fails).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.acceptance import apps
from tests.acceptance.helpers import WorkerProcess

SpawnWorker = Callable[..., WorkerProcess]


@pytest.fixture
def spawn_worker(dsn: str, tmp_path: Path) -> Iterator[SpawnWorker]:
    """`spawn_worker("--concurrency", "2", ready=True)`: a worker process on `dsn`.

    With `ready=False` the process is only launched (call `wait_ready()` later), which lets
    several workers start in parallel.
    """
    started: list[WorkerProcess] = []

    def start(*args: str, ready: bool = True) -> WorkerProcess:
        defaults = {"--concurrency": "4", "--poll-interval": "0.5", "--shutdown-timeout": "60"}
        # Options the test did not give get these defaults.
        extra = [
            item for key, value in defaults.items() if key not in args for item in (key, value)
        ]
        log_path = tmp_path / f"worker-{len(started) + 1}.log"
        worker = WorkerProcess(dsn, log_path, [*args, *extra])
        started.append(worker)
        worker.launch()
        return worker.wait_ready() if ready else worker

    try:
        yield start
    finally:
        for worker in started:
            worker.cleanup()
        for worker in started:
            print(f"----- {worker.log_path.name}: {' '.join(worker.command[2:])}")
            print(worker.log())


@pytest.fixture
def db(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the test database, with the tasks' bookkeeping tables."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(apps.TABLES_DDL)
        yield conn
