"""Helpers for the acceptance tests: worker subprocesses and the questions tests ask the database.

`WorkerProcess` runs `python -m pgqueue worker --app tests.acceptance.apps:app` from the
repository root with PGQUEUE_DSN set and its output in a log file; `wait_ready()` returns once
the worker logs that it is ready. The functions below enqueue jobs and read their rows on the
test's own connection.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg.rows import dict_row

from pgqueue.enqueue import build_request
from pgqueue.tasks import Task
from tests.conftest import ROOT, wait_until

APP = "tests.acceptance.apps:app"
READY_TIMEOUT = 60.0  # a cold Python start on a loaded 2-core machine can take a while
_READY = re.compile(r"worker (?P<name>\S+) \(id (?P<id>\d+)\) ready")


def subprocess_env(dsn: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a pgqueue subprocess: ours, minus pgqueue settings, plus `dsn`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PGQUEUE_DSN", "DATABASE_URL", "PGQUEUE_APP", "PGQUEUE_LOG_LEVEL")
    }
    env["PYTHONUNBUFFERED"] = "1"
    if dsn is not None:
        env["PGQUEUE_DSN"] = dsn
    env.update(extra)
    return env


class WorkerProcess:
    """One `pgqueue worker` subprocess whose stdout and stderr go to `log_path`."""

    def __init__(
        self,
        dsn: str,
        log_path: Path,
        args: Sequence[str],
        app: str = APP,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.dsn = dsn
        self.env = dict(env or {})
        self.log_path = log_path
        self.command = [sys.executable, "-m", "pgqueue", "worker", "--app", app, *args]
        self.worker_id: int | None = None
        self.name: str | None = None
        self._log_file: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def launch(self) -> WorkerProcess:
        """Start the process without waiting for it to be ready."""
        self._log_file = self.log_path.open("wb")
        self._process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=subprocess_env(self.dsn, **self.env),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal must not reach it
        )
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> WorkerProcess:
        """Block until the worker logs that it is ready; fail early if it exits instead."""

        def ready() -> re.Match[str] | None:
            match = _READY.search(self.log())
            if match is None and self.poll() is not None:
                raise AssertionError(
                    f"worker exited with code {self.poll()} before it was ready:\n{self.log()}"
                )
            return match

        match = wait_until(ready, timeout=timeout, interval=0.05, what="the worker to be ready")
        self.worker_id = int(match["id"])
        self.name = match["name"]
        return self

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self._process is not None, "the worker was not launched"
        return self._process

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """The exit code, waiting up to `timeout` seconds (TimeoutExpired after that)."""
        return self.process.wait(timeout)

    def kill(self) -> int:
        """SIGKILL: the process gets no chance to clean anything up."""
        self.process.kill()
        return self.process.wait(30)

    def cleanup(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(30)
        if self._log_file is not None:
            self._log_file.close()

    # -- output ---------------------------------------------------------------------------

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_lines(self, containing: str) -> list[str]:
        return [line for line in self.log().splitlines() if containing in line]

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        wait_until(lambda: text in self.log(), timeout=timeout, what=f"{text!r} in the log")


# -- helpers on the test's connection --------------------------------------------------------


def enqueue(conn: psycopg.Connection[Any], task: Task[Any, Any], *args: Any) -> int:
    """Enqueue one job through the public API (committed at once: autocommit); its id."""
    return task.apply_async(args=args, connection=conn).id


def enqueue_many(
    conn: psycopg.Connection[Any], jobs: Sequence[tuple[Task[Any, Any], Sequence[Any]]]
) -> None:
    """Enqueue many jobs with the engine's own INSERT, pipelined, in one transaction."""
    requests = [build_request(task, args) for task, args in jobs]
    statement = requests[0].statement  # all due now: INSERT_JOB_NOW
    assert all(request.statement == statement for request in requests)
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(statement, [request.params() for request in requests])


def job_row(conn: psycopg.Connection[Any], job_id: int) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT id, task_name, status::text AS status, attempts, max_attempts, worker_id,"
            " result, error FROM pgqueue_all_jobs WHERE id = %s",
            (job_id,),
        ).fetchone()
    assert row is not None, f"job {job_id} does not exist"
    return row


def executions(conn: psycopg.Connection[Any], job_id: int) -> list[tuple[int, int]]:
    """(attempt, pid) of every recorded execution of a job, in order."""
    rows = conn.execute(
        "SELECT attempt, pid FROM acceptance_executions WHERE job_id = %s ORDER BY at, attempt",
        (job_id,),
    ).fetchall()
    return [(row[0], row[1]) for row in rows]


def set_flag(conn: psycopg.Connection[Any], name: str) -> None:
    """Let the blocking tasks waiting on `name` finish."""
    conn.execute("INSERT INTO acceptance_flags (name) VALUES (%s) ON CONFLICT DO NOTHING", (name,))


def wait_for_status(
    conn: psycopg.Connection[Any], job_id: int, status: str, timeout: float = 30.0
) -> dict[str, Any]:
    """Until the job's row has `status`; returns that row."""

    def reached() -> dict[str, Any] | None:
        row = job_row(conn, job_id)
        return row if row["status"] == status else None

    row: dict[str, Any] = wait_until(
        reached, timeout=timeout, interval=0.05, what=f"job {job_id} {status}"
    )
    return row


def wait_started(
    conn: psycopg.Connection[Any], job_id: int, attempt: int = 1, timeout: float = 30.0
) -> None:
    """Until the task itself has recorded that attempt `attempt` began running."""
    wait_until(
        lambda: any(a == attempt for a, _ in executions(conn, job_id)),
        timeout=timeout,
        interval=0.05,
        what=f"job {job_id} attempt {attempt} to start",
    )


def stop_gracefully(worker: WorkerProcess, timeout: float = 60.0) -> int:
    worker.send(signal.SIGTERM)
    return worker.wait(timeout)
