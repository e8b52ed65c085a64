"""The read-side commands as a user runs them, against real `pgqueue worker` processes:
`pgqueue status [--watch]`, `pgqueue workers`, `pgqueue queues`, `pgqueue jobs list | show`,
and every way their input can be wrong (one line on stderr, a non-zero exit)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from pgqueue.cli.status import CLEAR_SCREEN
from tests.acceptance import apps
from tests.acceptance.conftest import SpawnWorker
from tests.acceptance.helpers import (
    enqueue,
    set_flag,
    stop_gracefully,
    subprocess_env,
    wait_for_status,
    wait_started,
)
from tests.acceptance.test_cli import UNREACHABLE_DSN, one_line_error, pgqueue
from tests.conftest import ROOT, wait_until

READ_COMMANDS = [
    ["status"],
    ["status", "--watch", "1"],
    ["workers"],
    ["queues"],
    ["jobs", "list"],
    ["jobs", "show", "1"],
]
READ_IDS = ["status", "status-watch", "workers", "queues", "jobs-list", "jobs-show"]


def run_json(*args: str, dsn: str) -> Any:
    result = pgqueue(*args, "--json", dsn=dsn)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def run_text(*args: str, dsn: str) -> str:
    result = pgqueue(*args, dsn=dsn)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


# -- against real workers ------------------------------------------------------------------


def test_status_shows_the_running_job_its_queue_and_the_live_worker(
    dsn: str, db: psycopg.Connection[Any], spawn_worker: SpawnWorker
) -> None:
    spawn_worker("--name", "status-worker")
    job = enqueue(db, apps.block, "status-release")
    wait_started(db, job)
    apps.record.apply_async(args=(1,), connection=db, countdown=3600)

    try:
        status = run_json("status", dsn=dsn)
        text = run_text("status", dsn=dsn)
    finally:
        set_flag(db, "status-release")

    (default,) = [q for q in status["queues"] if q["name"] == "default"]
    assert (default["running"], default["scheduled"], default["ready"]) == (1, 1, 0)
    assert default["workers"] == 1 and default["paused"] is False
    assert status["workers_alive"] == 1
    assert status["overdue_schedules"] == []
    assert "default" in text and "workers: 1 alive" in text
    assert "schedules overdue: none" in text
    wait_for_status(db, job, "succeeded")


def test_workers_lists_each_worker_process_with_the_jobs_it_runs(
    dsn: str, db: psycopg.Connection[Any], spawn_worker: SpawnWorker
) -> None:
    worker = spawn_worker("--name", "listed-worker", "--concurrency", "3")
    job = enqueue(db, apps.block, "workers-release")
    wait_started(db, job)

    try:
        fleet = run_json("workers", dsn=dsn)
        text = run_text("workers", dsn=dsn)
    finally:
        set_flag(db, "workers-release")

    (listed,) = fleet["workers"]
    assert (listed["name"], listed["pid"], listed["concurrency"]) == (
        "listed-worker",
        worker.pid,
        3,
    )
    assert listed["alive"] is True and listed["pool"] == "thread"
    assert [(j["id"], j["task_name"]) for j in listed["running"]] == [(job, apps.block.name)]
    workers_table, running_table = text.split("running jobs:")
    (worker_line,) = [line for line in workers_table.splitlines() if "listed-worker" in line]
    assert str(worker.pid) in worker_line.split() and "1/3" in worker_line.split()
    (job_line,) = [line for line in running_table.splitlines() if apps.block.name in line]
    assert job_line.split()[:3] == ["listed-worker", str(job), apps.block.name]

    wait_for_status(db, job, "succeeded")
    assert stop_gracefully(worker) == 0
    assert "(no workers running)" in run_text("workers", dsn=dsn)


def test_jobs_list_and_show_what_real_jobs_did(
    dsn: str, db: psycopg.Connection[Any], spawn_worker: SpawnWorker
) -> None:
    spawn_worker()
    ok = enqueue(db, apps.record, 7)
    failing = enqueue(db, apps.always_fails)
    wait_for_status(db, ok, "succeeded")
    wait_for_status(db, failing, "failed")

    listed = run_json("jobs", "list", dsn=dsn)
    assert [(j["id"], j["status"]) for j in listed["jobs"]] == [
        (failing, "failed"),
        (ok, "succeeded"),
    ]
    assert listed["next_before"] is None
    failed = run_json("jobs", "list", "--status", "failed", dsn=dsn)
    assert [j["id"] for j in failed["jobs"]] == [failing]
    assert failed["jobs"][0]["error_type"] == "ValueError"

    first = run_text("jobs", "list", "--limit", "1", dsn=dsn)
    assert str(failing) in first and "this task always fails" in first
    hint = first.strip().splitlines()[-1]
    assert hint == f"more: pgqueue jobs list --limit 1 --before {failing}"
    second = run_json(*hint.split()[2:], dsn=dsn)
    assert [j["id"] for j in second["jobs"]] == [ok]
    assert run_json("jobs", "list", "--before", str(ok), dsn=dsn)["jobs"] == []

    db.execute(
        'UPDATE pgqueue_finished_jobs SET headers = \'{"tenant": "acme"}\' WHERE id = %s',
        (failing,),
    )
    shown = run_text("jobs", "show", str(failing), dsn=dsn)
    assert f"job {failing}: {apps.always_fails.name} failed" in shown
    assert 'headers            {"tenant": "acme"}' in shown
    assert "headers" not in run_text("jobs", "show", str(ok), dsn=dsn)
    assert "error: ValueError: this task always fails" in shown
    assert "Traceback (most recent call last)" in shown
    assert "attempts           2 of 2" in shown
    detail = run_json("jobs", "show", str(failing), dsn=dsn)
    assert detail["error"]["type"] == "ValueError"
    assert detail["headers"] == {"tenant": "acme"}
    assert "Traceback" in detail["error"]["traceback"]
    assert detail["attempt_history"][-1]["outcome"] == "failed"
    assert detail["attempt_history"][-1]["attempt"] == 2
    assert run_json("jobs", "show", str(ok), dsn=dsn)["result"] == 7


def test_queues_shows_which_queues_are_paused(dsn: str, db: psycopg.Connection[Any]) -> None:
    enqueue(db, apps.record, 1)
    db.execute(
        "INSERT INTO pgqueue_queues (name, paused_at, paused_by) VALUES ('reports', now(), 'ops')"
    )

    listed = {q["name"]: q for q in run_json("queues", dsn=dsn)}
    text = run_text("queues", dsn=dsn)

    assert listed["reports"]["paused"] is True and listed["reports"]["paused_by"] == "ops"
    assert listed["default"]["paused"] is False and listed["default"]["ready"] == 1
    (reports_line,) = [line for line in text.splitlines() if line.startswith("reports")]
    assert "paused" in reports_line and "ops" in reports_line


# -- pgqueue status --watch ----------------------------------------------------------------


class Output:
    """What a subprocess has written to its stdout so far, read as it comes (no sleeps)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self.process = process
        self.fd = process.stdout.fileno()
        self.text = ""

    def wait_for(self, condition: Callable[[str], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition(self.text):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out; the output so far:\n{self.text}")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise AssertionError(
                        f"exited with {self.process.wait()} before that:\n{self.text}"
                    )
                self.text += chunk.decode()


def complete_frames(text: str) -> list[str]:
    """The redraws written in full (each ends with the schedules line)."""
    return [frame for frame in text.split(CLEAR_SCREEN)[1:] if "schedules overdue" in frame]


@pytest.fixture
def watch(dsn: str) -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], Output]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> tuple[subprocess.Popen[bytes], Output]:
        process = subprocess.Popen(
            [sys.executable, "-m", "pgqueue", "status", "--watch", *args],
            cwd=ROOT,
            env=subprocess_env(dsn),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        started.append(process)
        return process, Output(process)

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(30)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def stop_with_ctrl_c(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
    assert process.stderr is not None
    assert process.stderr.read() == b""


def test_watch_redraws_in_place_until_ctrl_c(
    watch: Callable[..., tuple[subprocess.Popen[bytes], Output]], db: psycopg.Connection[Any]
) -> None:
    process, output = watch("0.2")
    output.wait_for(lambda text: len(complete_frames(text)) >= 1)
    assert "(no queues" in complete_frames(output.text)[0]

    apps.record.apply_async(args=(1,), connection=db, queue="watched")
    output.wait_for(lambda text: "watched" in (complete_frames(text) or [""])[-1])

    frames = complete_frames(output.text)
    assert len(frames) >= 2
    assert frames[0].startswith("Every 200ms: pgqueue status")
    stop_with_ctrl_c(process)


def test_watch_with_json_prints_one_document_per_line(
    watch: Callable[..., tuple[subprocess.Popen[bytes], Output]], db: psycopg.Connection[Any]
) -> None:
    enqueue(db, apps.record, 1)
    process, output = watch("0.2", "--json")
    output.wait_for(lambda text: text.count("\n") >= 2)

    documents = [json.loads(line) for line in output.text.splitlines()[:2]]
    for document in documents:
        assert [q["name"] for q in document["queues"]] == ["default"]
        assert document["queues"][0]["ready"] == 1
    assert CLEAR_SCREEN not in output.text
    stop_with_ctrl_c(process)


def test_watch_shows_a_lost_connection_and_carries_on(
    watch: Callable[..., tuple[subprocess.Popen[bytes], Output]],
    db: psycopg.Connection[Any],
    dsn: str,
) -> None:
    process, output = watch("0.2")
    output.wait_for(lambda text: len(complete_frames(text)) >= 1)

    def terminate_the_watchers_session() -> bool:
        row = db.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND application_name = 'pgqueue'"
        ).fetchone()
        return row is not None and row[0] > 0

    wait_until(terminate_the_watchers_session, what="the watcher's session to terminate")
    output.wait_for(lambda text: "database unavailable" in text)
    shown = len(output.text)
    output.wait_for(lambda text: len(complete_frames(text[shown:])) >= 1)
    stop_with_ctrl_c(process)


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["jobs", "show", "987654"], 1, "no job with id 987654"),
        (["jobs", "show", "abc"], 2, "job id must be a whole number, got 'abc'"),
        (["jobs", "show", "99999999999999999999"], 2, "job id must be between 1 and"),
        (["jobs", "list", "--status", "failed,done"], 2, "unknown job status 'done'"),
        (["jobs", "list", "--since", "yesterday"], 2, "invalid duration 'yesterday'"),
        (["jobs", "list", "--since", "0"], 2, "--since takes an age > 0"),
        (["jobs", "list", "--before", "x1"], 2, "--before must be a whole number"),
        (["jobs", "list", "--limit", "0"], 2, "--limit takes 1 to 1000"),
        (["status", "--watch", "0"], 2, "--watch takes a number of seconds > 0"),
        (["status", "--watch", "often"], 2, "invalid duration 'often'"),
        (["workers", "--past", "-1"], 2, "--past takes a number >= 0"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else str(value),
)
def test_bad_input_is_one_line_and_a_non_zero_exit(
    dsn: str, args: list[str], code: int, message: str
) -> None:
    result = pgqueue(*args, dsn=dsn)
    line = one_line_error(result)
    assert result.returncode == code
    assert message in line, line


@pytest.mark.parametrize("command", READ_COMMANDS, ids=READ_IDS)
def test_a_database_that_is_down_is_one_line(command: list[str]) -> None:
    line = one_line_error(pgqueue(*command, "--dsn", UNREACHABLE_DSN))
    assert "could not connect" in line


@pytest.mark.parametrize("command", READ_COMMANDS, ids=READ_IDS)
def test_a_schema_not_migrated_is_one_line(command: list[str], empty_dsn: str) -> None:
    line = one_line_error(pgqueue(*command, dsn=empty_dsn))
    assert "pgqueue migrate" in line


def test_stats_is_gone_in_favour_of_status() -> None:
    result = pgqueue("stats")
    assert result.returncode == 2
    assert "invalid choice: 'stats'" in result.stderr
