"""`pgqueue jobs retry | cancel | delete` and `pgqueue queues pause | resume`, run through the
command line's entry point: one line per job id, JSON with --json, exit 1 when an id was not
found or refused, and one clear line for every bad input."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.cli import main
from tests.integration.test_admin import FAILURE, _finish, _row

UNREACHABLE_DSN = "postgresql://postgres@127.0.0.1:1/x"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], list[str]]:
    """Exit code, stdout lines and stderr lines of `pgqueue *argv`."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


@pytest.fixture
def ids(app: pgqueue.App, conn: psycopg.Connection[Any]) -> dict[str, int]:
    """A job in each state."""

    @app.task
    def noop(n: int = 0) -> int:
        return n

    jobs = {name: noop.delay(n).id for n, name in enumerate(("queued", "running", "ok", "failed"))}
    conn.execute("UPDATE pgqueue_jobs SET status = 'running' WHERE id = %s", (jobs["running"],))
    _finish(conn, jobs["ok"], "succeeded", result="2")
    _finish(conn, jobs["failed"], "failed", error=FAILURE)
    return jobs


def test_retry_prints_a_line_per_id_and_fails_on_an_unknown_one(
    dsn: str, conn: psycopg.Connection[Any], ids: dict[str, int], capsys: Any
) -> None:
    code, out, err = run(
        capsys,
        "jobs",
        "retry",
        str(ids["failed"]),
        str(ids["ok"]),
        str(ids["queued"]),
        "424242",
        "--dsn",
        dsn,
    )
    assert code == 1
    assert out == [
        f"job {ids['failed']}: queued to run again (its earlier attempts are kept in its history)"
    ]
    assert err == [
        f"job {ids['ok']}: succeeded, not retried (only failed or cancelled jobs are; enqueue a "
        "new job to run it again)",
        f"job {ids['queued']}: still queued, not retried (only failed or cancelled jobs are)",
        "job 424242: no such job (never enqueued, or pruned or deleted)",
    ]
    assert _row(conn, ids["failed"])["status"] == "queued"

    # Every id retried: exit 0.
    _finish(conn, ids["failed"], "failed", error=FAILURE)
    code, out, err = run(capsys, "jobs", "retry", str(ids["failed"]), "--dsn", dsn)
    assert (code, err) == (0, []), out


def test_retry_json_answers_every_id(dsn: str, ids: dict[str, int], capsys: Any) -> None:
    code = main(["jobs", "retry", str(ids["failed"]), "9999", "--json", "--dsn", dsn])
    assert code == 1
    assert json.loads(capsys.readouterr().out) == [
        {"id": ids["failed"], "result": "done", "status": "queued"},
        {"id": 9999, "result": "not_found", "status": None},
    ]


def test_retry_failed_by_filter(
    dsn: str, conn: psycopg.Connection[Any], ids: dict[str, int], capsys: Any
) -> None:
    code, out, _ = run(capsys, "jobs", "retry", "--failed", "--queue", "elsewhere", "--dsn", dsn)
    assert (code, out) == (0, ["no failed job matches: nothing retried"])
    code, out, _ = run(capsys, "jobs", "retry", "--failed", "--since", "1h", "--dsn", dsn)
    assert (code, out) == (0, [f"queued 1 failed job(s) to run again: {ids['failed']}"])
    _finish(conn, ids["failed"], "failed", error=FAILURE)
    assert main(["jobs", "retry", "--failed", "--json", "--dsn", dsn]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"id": ids["failed"], "result": "done", "status": "queued"}
    ]


def test_cancel_prints_a_line_per_id(dsn: str, ids: dict[str, int], capsys: Any) -> None:
    argv = ["jobs", "cancel", str(ids["queued"]), str(ids["running"]), str(ids["ok"])]
    code, out, err = run(capsys, *argv, "--dsn", dsn)
    assert (code, err) == (0, [])
    assert out == [
        f"job {ids['queued']}: cancelled",
        f"job {ids['running']}: cancellation requested from its worker",
        f"job {ids['ok']}: already finished (succeeded), nothing to cancel",
    ]
    code, out, err = run(capsys, "jobs", "cancel", "31337", "--dsn", dsn)
    assert (code, out, err) == (
        1,
        [],
        ["job 31337: no such job (never enqueued, or pruned or deleted)"],
    )


def test_delete_refuses_jobs_that_have_not_finished(
    dsn: str, conn: psycopg.Connection[Any], ids: dict[str, int], capsys: Any
) -> None:
    code, out, err = run(
        capsys, "jobs", "delete", str(ids["ok"]), str(ids["running"]), "--dsn", dsn
    )
    assert code == 1
    assert out == [f"job {ids['ok']}: deleted (succeeded)"]
    assert err == [
        f"job {ids['running']}: still running, not deleted (only finished jobs are; cancel it "
        "first)"
    ]
    remaining = {row[0] for row in conn.execute("SELECT id FROM pgqueue_all_jobs")}
    assert remaining == {ids["queued"], ids["running"], ids["failed"]}
    assert main(["jobs", "delete", str(ids["failed"]), "--json", "--dsn", dsn]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"id": ids["failed"], "result": "done", "status": "failed"}
    ]


def test_pause_and_resume(dsn: str, conn: psycopg.Connection[Any], capsys: Any) -> None:
    code, out, err = run(capsys, "queues", "pause", "emails", "--by", "alice", "--dsn", dsn)
    assert code == 0
    assert out == [
        "queue 'emails' paused: no worker starts a new job of it until `pgqueue queues resume "
        "emails` (running jobs finish; enqueueing goes on)"
    ]
    assert len(err) == 1 and "queue 'emails' is not known yet" in err[0]
    code, out, err = run(capsys, "queues", "pause", "emails", "--dsn", dsn)
    assert (code, err) == (0, [])
    assert out[0].startswith("queue 'emails' was paused already (since ") and "by alice" in out[0]

    assert main(["queues", "resume", "emails", "--json", "--dsn", dsn]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert (resumed["changed"], resumed["paused"], resumed["known"]) == (True, False, True)
    code, out, err = run(capsys, "queues", "resume", "emails", "--dsn", dsn)
    assert (code, out, err) == (0, ["queue 'emails' is not paused: nothing to resume"], [])

    code, out, err = run(capsys, "queues", "resume", "typo", "--dsn", dsn)
    assert (code, out) == (1, [])
    assert len(err) == 1 and err[0].startswith("queue 'typo': no such queue")

    assert main(["queues", "pause", "default", "--json", "--dsn", dsn]) == 0
    paused = json.loads(capsys.readouterr().out)
    assert (paused["queue"], paused["changed"], paused["paused"]) == ("default", True, True)
    assert "@" in paused["paused_by"]  # user@host by default


BAD_INPUT = [
    (["jobs", "retry"], "give the ids of the jobs to retry, or --failed"),
    (["jobs", "retry", "1", "--failed"], "give job ids or --failed, not both"),
    (["jobs", "retry", "1", "--queue", "q"], "--queue: only with --failed"),
    (["jobs", "retry", "--failed", "--since", "soon"], "invalid duration 'soon'"),
    (["jobs", "retry", "--failed", "--since", "0"], "--since takes a positive age"),
    (["jobs", "retry", "12x"], "a job id is a whole number, got '12x'"),
    (["jobs", "delete", "1.5"], "a job id is a whole number, got '1.5'"),
    (["jobs", "cancel", "x"], "a job id is a whole number, got 'x'"),
    (["queues", "pause", "no spaces"], "invalid queue name 'no spaces'"),
    (["queues", "resume", "a@b"], "invalid queue name 'a@b'"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line(dsn: str, argv: list[str], message: str, capsys: Any) -> None:
    code, out, err = run(capsys, *argv, "--dsn", dsn)
    assert (code, out) == (2, [])
    assert err == [f"pgqueue: error: {message}"] or (len(err) == 1 and message in err[0])


COMMANDS = [
    ["jobs", "retry", "1"],
    ["jobs", "retry", "--failed"],
    ["jobs", "cancel", "1"],
    ["jobs", "delete", "1"],
    ["queues", "pause", "q"],
    ["queues", "resume", "q"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_a_database_that_is_down_is_one_line(argv: list[str], capsys: Any) -> None:
    code, out, err = run(capsys, *argv, "--dsn", UNREACHABLE_DSN)
    assert (code, out) == (1, [])
    assert len(err) == 1 and "could not connect" in err[0], err


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_a_database_not_migrated_is_one_line(empty_dsn: str, argv: list[str], capsys: Any) -> None:
    code, out, err = run(capsys, *argv, "--dsn", empty_dsn)
    assert (code, out) == (1, [])
    assert len(err) == 1 and "run `pgqueue migrate`" in err[0], err
