"""Every way a job ends resolves its workflow's dependents in the same statement: an expiry, a
cancellation of a waiting step, a rescue that ends a step FAILED, a claim that finds a step
expired; and `pgqueue workflows show` draws the result."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import queries
from pgqueue.cli import main


@pytest.fixture
def steps(app: pgqueue.App) -> dict[str, pgqueue.Task[Any, Any]]:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    @app.task
    def on_error(job_id: int, error: dict[str, Any]) -> None: ...

    return {"add": add, "on_error": on_error}


def _statuses(flow: pgqueue.Workflow) -> list[str]:
    return [job.status.value for job in flow.refresh().jobs]


def test_expiry_of_a_queued_step_cancels_its_dependents_and_releases_link_error(
    app: pgqueue.App, steps: dict[str, Any], conn: psycopg.Connection[Any]
) -> None:
    add = steps["add"]
    flow = pgqueue.chain(add.s(1, 2).set(expires=60), add.s(1)).apply_async(
        link_error=steps["on_error"].s()
    )
    first = flow.jobs[0].id
    conn.execute(
        "UPDATE pgqueue_jobs SET expires_at = now() - interval '1 s' WHERE id = %s", (first,)
    )
    conn.execute(queries.EXPIRE_QUEUED_JOBS)
    assert _statuses(flow) == ["cancelled", "cancelled"]
    assert flow.jobs[1].error is not None
    assert flow.jobs[1].error["type"] == "DependencyFailed"
    assert f"step {first} " in flow.jobs[1].error["message"]
    assert "was cancelled: Expired" in flow.jobs[1].error["message"]
    (errback,) = flow.link_error_jobs
    assert errback.status is pgqueue.JobStatus.QUEUED
    assert errback.args[0] == first and errback.args[1]["type"] == "Expired"
    with pytest.raises(pgqueue.JobCancelled) as info:
        flow.wait(timeout=5)
    assert info.value.job_id == first


def test_cancelling_a_waiting_step_by_id_cancels_what_depends_on_it(
    app: pgqueue.App, steps: dict[str, Any]
) -> None:
    add = steps["add"]
    flow = pgqueue.chain(add.s(1, 2), add.s(1), add.s(1)).apply_async()
    assert _statuses(flow) == ["queued", "waiting", "waiting"]
    assert app.cancel(flow.jobs[1].id, "not today") is True
    assert _statuses(flow) == ["queued", "cancelled", "cancelled"]
    assert flow.jobs[1].error == {
        "type": "Cancelled",
        "message": "not today",
        "traceback": None,
    }
    assert flow.jobs[2].error is not None
    assert flow.jobs[2].error["failed_job_id"] == flow.jobs[1].id


def test_rescue_that_ends_a_step_failed_cancels_its_dependents(
    app: pgqueue.App, steps: dict[str, Any], conn: psycopg.Connection[Any]
) -> None:
    add = steps["add"]
    flow = pgqueue.chord([add.s(1, 1), add.s(2, 2)], add.s(0)).apply_async()
    # The first member ran its last attempt on a worker that is gone.
    conn.execute(
        "UPDATE pgqueue_jobs SET status = 'running', worker_id = 424242, attempts = max_attempts,"
        " started_at = now(), lease = 1 WHERE id = %s",
        (flow.jobs[0].id,),
    )
    conn.execute(queries.RESCUE_ORPHANED_JOBS)
    assert _statuses(flow) == ["failed", "queued", "cancelled"]
    assert flow.jobs[2].error is not None
    assert "failed: WorkerLost" in flow.jobs[2].error["message"]


def test_a_claim_that_finds_a_released_step_expired_cancels_its_dependents(
    app: pgqueue.App, steps: dict[str, Any], conn: psycopg.Connection[Any]
) -> None:
    add = steps["add"]
    flow = pgqueue.chain(add.s(1, 2).set(expires=60), add.s(1)).apply_async()
    conn.execute(
        "UPDATE pgqueue_jobs SET expires_at = now() - interval '1 s' WHERE id = %s",
        (flow.jobs[0].id,),
    )
    conn.execute(
        queries.CLAIM_JOBS,
        {
            "queues": ["default"],
            "after_priority": [None],
            "after_run_at": [None],
            "after_id": [None],
            "lower_than": [32768],
            "higher_than": [-32769],
            "limit": 10,
            "worker_id": 1,
        },
    )
    assert _statuses(flow) == ["cancelled", "cancelled"]


def test_workflows_show_draws_the_tree_and_prints_json(
    app: pgqueue.App, steps: dict[str, Any], dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    add = steps["add"]
    flow = (
        pgqueue.chord([pgqueue.chain(add.s(1, 1), add.s(1)), add.s(2, 2)], add.s(0)) | add.s(10)
    ).apply_async(link_error=steps["on_error"].s())
    app.cancel(flow.jobs[0].id)
    assert main(["workflows", "show", str(flow.id), "--dsn", dsn]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"workflow {flow.id}: cancelled (5 steps, created ")
    assert out[1] == "chain"
    assert out[2] == "├── chord (header, then callback)"
    assert out[3] == "│   ├── group"
    assert out[4] == "│   │   ├── chain"
    name = add.name
    assert out[5].startswith(f"│   │   │   ├── {name}  cancelled  job {flow.jobs[0].id}  Cancelled")
    assert out[-2] == "link_error"
    assert out[-1].startswith(f"└── {steps['on_error'].name}  queued  job ")
    assert main(["workflows", "show", str(flow.id), "--dsn", dsn, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == flow.id and shown["status"] == "cancelled"
    assert shown["tree"]["type"] == "workflow"
    leaf = shown["tree"]
    for _ in range(5):  # workflow, chain, chord, group, chain
        leaf = leaf["children"][0]
    assert leaf["job_id"] == flow.jobs[0].id and leaf["status"] == "cancelled"
    assert main(["workflows", "show", "999999", "--dsn", dsn]) == 1
    assert "no workflow with id 999999" in capsys.readouterr().err
    # Each step's own page names its workflow.
    step = flow.jobs[-1].id
    assert main(["jobs", "show", str(step), "--dsn", dsn]) == 0
    assert f"  workflow           {flow.id} (pgqueue workflows show {flow.id})" in (
        capsys.readouterr().out.splitlines()
    )
    assert main(["jobs", "show", str(step), "--dsn", dsn, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["workflow_id"] == flow.id


def test_retention_prunes_a_workflow_once_all_its_jobs_are_pruned(
    app: pgqueue.App, steps: dict[str, Any], conn: psycopg.Connection[Any]
) -> None:
    from pgqueue.maintenance import prune_finished_jobs_sync
    from pgqueue.testing import drain

    add = steps["add"]
    done = pgqueue.chain(add.s(1, 2), add.s(1)).apply_async()
    kept = pgqueue.chain(add.s(1, 2), add.s(1)).apply_async()
    drain(app)
    conn.execute("UPDATE pgqueue_workflows SET created_at = now() - interval '2 h'")
    conn.execute(
        "UPDATE pgqueue_finished_jobs SET finished_at = now() - interval '2 h'"
        " WHERE workflow_id = %s OR id = %s",
        (done.id, kept.jobs[0].id),
    )
    assert prune_finished_jobs_sync(conn, 3600.0) == 3
    with pytest.raises(pgqueue.WorkflowNotFound):
        app.get_workflow(done.id)
    assert [job.status.value for job in app.get_workflow(kept.id).jobs] == ["succeeded"]
    remaining = conn.execute("SELECT count(*) FROM pgqueue_workflow_steps").fetchone()
    assert remaining == (2,)


def test_a_step_cancelled_by_its_parents_failure_is_not_retried_alone(
    app: pgqueue.App, steps: dict[str, Any], conn: psycopg.Connection[Any]
) -> None:
    from pgqueue import admin

    add = steps["add"]
    flow = pgqueue.chain(add.s(1, 2), add.s(1)).apply_async()
    app.cancel(flow.jobs[0].id)
    first, second = (r.result for r in admin.retry(conn, [j.id for j in flow.jobs]))
    assert (first, second) == ("done", "wrong_state")
    assert _statuses(flow) == ["queued", "cancelled"]


def test_a_worker_whose_statements_do_not_copy_workflow_id_still_releases_the_next_step(
    app: pgqueue.App, steps: dict[str, Any], conn: psycopg.Connection[Any]
) -> None:
    # A worker of the pgqueue before workflows (a rolling deploy) ends jobs without copying
    # the workflow to pgqueue_finished_jobs: the trigger reads it from the deleted row.
    older = queries.COMPLETE_JOBS.replace(", workflow_id)", ")").replace(", e.workflow_id", "")
    assert older != queries.COMPLETE_JOBS and "workflow_id" not in older
    add = steps["add"]
    flow = pgqueue.chain(add.s(1, 2), add.s(10)).apply_async()
    first = flow.jobs[0].id
    conn.execute(
        "UPDATE pgqueue_jobs SET status = 'running', worker_id = 1, attempts = 1,"
        " started_at = now(), lease = 7 WHERE id = %s",
        (first,),
    )
    outcome = [{"id": first, "lease": 7, "status": "succeeded", "result": 3}]
    conn.execute(older, {"outcomes": json.dumps(outcome)})
    assert _statuses(flow) == ["succeeded", "queued"]
    assert flow.jobs[1].args == [3, 10]
