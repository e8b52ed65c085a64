"""`pgqueue worker --processes N`: a real supervisor and its real worker children.

The children's pids come from pgqueue_workers, their parent from /proc: these tests run on
Linux, as the rest of the acceptance suite does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgqueue.supervisor import EARLY_EXITS_TO_GIVE_UP
from tests.acceptance import apps
from tests.acceptance.conftest import SpawnWorker
from tests.acceptance.helpers import (
    WorkerProcess,
    enqueue,
    executions,
    job_row,
    set_flag,
    wait_for_status,
    wait_started,
)
from tests.conftest import wait_until

STOPPING = "stopping: no new jobs"
EXIT_USAGE = 2


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name; None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return text.rpartition(")")[2].split()


def alive(pid: int) -> bool:
    """Running: neither gone nor a zombie (nothing may reap an orphan in a container)."""
    fields = _proc_stat(pid)
    return fields is not None and fields[0] != "Z"


def parent_of(pid: int) -> int | None:
    fields = _proc_stat(pid)
    return int(fields[1]) if fields is not None else None


def registered(db: psycopg.Connection[Any]) -> list[tuple[str, int]]:
    """(name, pid) of the rows in pgqueue_workers."""
    return [(row[0], row[1]) for row in db.execute("SELECT name, pid FROM pgqueue_workers")]


def live_workers(db: psycopg.Connection[Any]) -> dict[str, int]:
    """name -> pid of the registered workers whose process runs (a killed worker's row stays
    until the rescuer removes it)."""
    return {name: pid for name, pid in registered(db) if alive(pid)}


def wait_for_children(
    db: psycopg.Connection[Any], supervisor: WorkerProcess, names: set[str]
) -> dict[str, int]:
    """Until workers with exactly these names are registered, all live children of
    `supervisor`; name -> pid."""

    def children() -> dict[str, int] | None:
        if supervisor.poll() is not None:
            raise AssertionError(f"the supervisor exited:\n{supervisor.log()}")
        live = live_workers(db)
        if set(live) != names:
            return None
        assert all(parent_of(pid) == supervisor.pid for pid in live.values()), live
        return live

    found: dict[str, int] = wait_until(
        children, timeout=90, interval=0.1, what=f"workers {sorted(names)} to register"
    )
    return found


def supervise(spawn_worker: SpawnWorker, *args: str) -> WorkerProcess:
    return spawn_worker("--processes", "2", "--name", "w", *args, ready=False)


def test_children_register_under_their_own_names_and_all_run_jobs(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker
) -> None:
    supervisor = supervise(spawn_worker, "--concurrency", "1")
    children = wait_for_children(db, supervisor, {"w-1", "w-2"})
    assert len(set(children.values())) == 2
    for name in children:  # their lines share one stream: each says whose it is
        supervisor.wait_for_log(f"pgqueue.worker[{name}]: worker {name} (id")

    # One slot each: two blocking jobs can only both start if both children claim.
    jobs = [enqueue(db, apps.block, "both") for _ in range(2)]
    for job in jobs:
        wait_started(db, job)
    assert {pid for job in jobs for _, pid in executions(db, job)} == set(children.values())
    set_flag(db, "both")
    for job in jobs:
        wait_for_status(db, job, "succeeded")

    supervisor.send(signal.SIGTERM)
    assert supervisor.wait(60) == 0
    assert registered(db) == []


def test_sigterm_stops_every_child_warm_and_the_running_job_finishes(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker
) -> None:
    supervisor = supervise(spawn_worker, "--shutdown-timeout", "600")
    children = wait_for_children(db, supervisor, {"w-1", "w-2"})
    running = enqueue(db, apps.block, "release")
    wait_started(db, running)

    supervisor.send(signal.SIGTERM)
    wait_until(lambda: len(supervisor.log_lines(STOPPING)) == 2, what="both children to stop")
    late = enqueue(db, apps.record, 1)  # no child claims any more
    assert supervisor.poll() is None, "the supervisor waits for the child with a running job"
    set_flag(db, "release")

    assert supervisor.wait(60) == 0
    finished = job_row(db, running)
    assert (finished["status"], finished["attempts"]) == ("succeeded", 1)
    assert job_row(db, late)["status"] == "queued"
    assert not any(alive(pid) for pid in children.values())
    assert registered(db) == []


def test_a_second_sigterm_is_forwarded_and_stops_the_children_at_once(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker
) -> None:
    supervisor = supervise(spawn_worker, "--shutdown-timeout", "600")
    wait_for_children(db, supervisor, {"w-1", "w-2"})
    job = enqueue(db, apps.block, "never")
    wait_started(db, job)

    supervisor.send(signal.SIGTERM)
    wait_until(lambda: len(supervisor.log_lines(STOPPING)) == 2, what="both children to stop")
    supervisor.send(signal.SIGTERM)
    assert supervisor.wait(30) == 1  # the child that was interrupted exited 1
    requeued = job_row(db, job)
    assert (requeued["status"], requeued["attempts"]) == ("queued", 0)


def test_a_killed_child_is_started_again_and_jobs_keep_running(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker
) -> None:
    supervisor = supervise(spawn_worker)
    children = wait_for_children(db, supervisor, {"w-1", "w-2"})

    os.kill(children["w-1"], signal.SIGKILL)
    wait_until(
        lambda: supervisor.log_lines("worker process 1 (pid") != [], what="the supervisor to see it"
    )
    assert supervisor.log_lines("killed by SIGKILL; starting it again in 1s")

    def replaced() -> dict[str, int] | None:
        live = live_workers(db)
        restarted = live.get("w-1") not in (None, children["w-1"])
        return live if restarted and len(live) == 2 else None

    after = wait_until(replaced, timeout=90, interval=0.1, what="a new w-1 to register")
    assert after["w-2"] == children["w-2"]
    assert parent_of(after["w-1"]) == supervisor.pid
    assert supervisor.log_lines(f"worker process 1 started again: pid {after['w-1']}")

    jobs = [enqueue(db, apps.record, n) for n in range(20)]
    for job in jobs:
        wait_for_status(db, job, "succeeded")
    supervisor.send(signal.SIGTERM)
    assert supervisor.wait(60) == 0


def test_a_bad_app_is_refused_once_with_one_line(
    db: psycopg.Connection[Any], dsn: str, tmp_path: Path
) -> None:
    supervisor = WorkerProcess(
        dsn, tmp_path / "bad-app.log", ["--processes", "2"], app="tests.acceptance.no_such_module"
    )
    try:
        assert supervisor.launch().wait(30) == EXIT_USAGE
        lines = supervisor.log().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("pgqueue: error: cannot import 'tests.acceptance.no_such")
        assert registered(db) == []
    finally:
        supervisor.cleanup()


@contextlib.contextmanager
def two_ports_second_taken() -> Any:
    """A port P that is free and P + 1 held by this test: child 1 binds, child 2 cannot."""
    for _ in range(20):
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1] - 1
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                taken.close()
                continue
        with taken:
            taken.listen()
            yield port
        return
    pytest.fail("no two neighbouring ports to test with")


def test_a_child_that_cannot_start_makes_the_supervisor_give_up(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker
) -> None:
    with two_ports_second_taken() as port:
        supervisor = supervise(
            spawn_worker, "--metrics-host", "127.0.0.1", "--metrics-port", str(port)
        )
        assert supervisor.wait(90) == 1

    assert len(supervisor.log_lines("worker process 2 (pid")) == EARLY_EXITS_TO_GIVE_UP - 1
    # (log lines are written in batches: the error line may come before the last of them)
    assert supervisor.log_lines(
        f"pgqueue: error: worker process 2 exited within 10s of its start "
        f"{EARLY_EXITS_TO_GIVE_UP} times in a row (last: exit code 2)"
    )
    assert "worker process 1" in supervisor.log(), "the healthy child was stopped"
    assert registered(db) == []


def test_children_stop_warm_when_the_supervisor_is_killed(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker
) -> None:
    supervisor = supervise(spawn_worker)
    children = wait_for_children(db, supervisor, {"w-1", "w-2"})

    assert supervisor.kill() == -signal.SIGKILL
    wait_until(
        lambda: not any(alive(pid) for pid in children.values()),
        timeout=60,
        interval=0.1,
        what="the orphaned children to exit",
    )
    assert len(supervisor.log_lines("the supervisor is gone: stopping")) == 2
    assert supervisor.log_lines("worker w-1 stopped") and supervisor.log_lines("worker w-2 stopped")
    assert registered(db) == [], "each child removed its own row: a warm stop"


@pytest.mark.parametrize("count", ["0", "-1", "257"])
def test_a_number_of_processes_out_of_range_is_refused_before_anything_starts(
    db: psycopg.Connection[Any], dsn: str, tmp_path: Path, count: str
) -> None:
    supervisor = WorkerProcess(dsn, tmp_path / "count.log", ["--processes", count])
    try:
        assert supervisor.launch().wait(30) == EXIT_USAGE
        assert supervisor.log().splitlines() == [
            f"pgqueue: error: --processes must be 1 to 256, got {count}"
        ]
        assert registered(db) == []
    finally:
        supervisor.cleanup()
