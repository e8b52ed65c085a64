"""Celery users' habits in a real `pgqueue worker` process: a bound task retrying itself with
`self.retry(countdown=...)`, signal receivers (one of them raising), and `--log-format json`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg

from tests.acceptance import habits_app
from tests.acceptance.helpers import WorkerProcess, enqueue, stop_gracefully, wait_for_status
from tests.conftest import wait_until

APP = "tests.acceptance.habits_app:app"


def _events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_bound_retries_signals_and_json_logs_in_a_real_worker(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    events_path = tmp_path / "events.jsonl"
    worker = WorkerProcess(
        dsn,
        tmp_path / "worker.log",
        ["--log-format", "json", "--concurrency", "2", "--poll-interval", "0.5"],
        app=APP,
        env={"HABITS_EVENTS": str(events_path)},
    )
    try:
        worker.launch().wait_ready()
        retried = enqueue(conn, habits_app.retry_twice, "report")
        added = enqueue(conn, habits_app.add, 2, 3)
        failed = enqueue(conn, habits_app.fails)
        # The raising receiver costs no job its outcome.
        assert wait_for_status(conn, retried, "succeeded")["result"] == 2
        assert wait_for_status(conn, added, "succeeded")["result"] == 5
        assert wait_for_status(conn, failed, "failed")["error"]["type"] == "ValueError"
        wait_until(
            lambda: (
                sum(
                    e["signal"] == "task_postrun" and e["task_id"] == retried
                    for e in _events(events_path)
                )
                == 3
            ),
            what="the bound task's three postruns",
        )
        assert stop_gracefully(worker) == 0
    finally:
        worker.cleanup()

    events = _events(events_path)
    assert events[0]["signal"] == "worker_ready"
    assert events[-1]["signal"] == "worker_shutdown"
    assert {e["pid"] for e in events} == {worker.pid}

    def of(job_id: int) -> list[tuple[str, Any]]:
        return [(e["signal"], e.get("retries")) for e in events if e.get("task_id") == job_id]

    assert of(retried) == [
        ("task_prerun", 0),
        ("task_retry", 0),
        ("task_postrun", 0),
        ("task_prerun", 1),
        ("task_retry", 1),
        ("task_postrun", 1),
        ("task_prerun", 2),
        ("task_success", 2),
        ("task_postrun", 2),
    ]
    retry = next(e for e in events if e["signal"] == "task_retry")
    assert (retry["countdown"], retry["error"]) == (0.2, "Retry")
    assert [s for s, _ in of(added)] == ["task_prerun", "task_success", "task_postrun"]
    assert [s for s, _ in of(failed)] == ["task_prerun", "task_failure", "task_postrun"]

    # Every line of the log is a JSON object; the job lines carry the job's fields.
    lines = [json.loads(line) for line in worker.log().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    job_lines = [line for line in lines if line.get("job_id") == retried]
    assert [(line["attempt"], line["outcome"]) for line in job_lines] == [
        (1, "retry"),
        (2, "retry"),
        (3, "succeeded"),
    ]
    assert all(line["task"] == habits_app.retry_twice.name for line in job_lines)
    assert all(isinstance(line["duration"], float) for line in job_lines)
    failed_line = next(line for line in lines if line.get("job_id") == failed)
    assert (failed_line["level"], failed_line["outcome"]) == ("ERROR", "failed")
    # The raising receiver was reported once per signal, not once per job.
    reports = [line for line in lines if line["logger"] == "pgqueue.signals"]
    assert len(reports) == 5
    assert all("RuntimeError: a receiver with a bug" in line["exception"] for line in reports)
