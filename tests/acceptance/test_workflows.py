"""Workflows on real `pgqueue worker` processes, one of them killed with SIGKILL while chords'
members and chains' steps run: every workflow still ends, each callback with every member's
result in order, and no step is released twice."""

from __future__ import annotations

import signal
from typing import Any

import psycopg

import pgqueue
from tests.acceptance import apps
from tests.acceptance.conftest import SpawnWorker
from tests.conftest import wait_until

MEMBERS = 12
CHORDS = 4
CHAINS = 4


def test_chords_and_chains_end_with_every_result_after_a_worker_is_killed(
    db: psycopg.Connection[Any], dsn: str, spawn_worker: SpawnWorker
) -> None:
    doomed = spawn_worker("--name", "doomed", "--concurrency", "4")
    survivor = spawn_worker("--name", "survivor", "--concurrency", "4")
    # Written on the test's connection: the acceptance app's own DSN is the workers'.
    chords = [
        pgqueue.chord([apps.steady.s(i, 0.2) for i in range(MEMBERS)], apps.record.s()).apply_async(
            connection=db
        )
        for _ in range(CHORDS)
    ]
    chains = [
        pgqueue.chain(
            apps.steady.s(1, 0.2), apps.steady.s(0.2), apps.steady.s(0.2), apps.record.s()
        ).apply_async(connection=db)
        for _ in range(CHAINS)
    ]
    wait_until(
        lambda: (
            db.execute(
                "SELECT count(*) FROM pgqueue_jobs WHERE status = 'running' AND worker_id = %s",
                (doomed.worker_id,),
            ).fetchone()
            == (4,)
        ),
        timeout=60,
        what="the doomed worker to run four steps",
    )
    assert doomed.kill() == -signal.SIGKILL

    reader = pgqueue.App(dsn)
    try:
        for flow in chords:
            assert reader.get_workflow(flow.id).wait(timeout=120) == list(range(MEMBERS))
        for flow in chains:
            assert reader.get_workflow(flow.id).wait(timeout=120) == 1
        for flow in (*chords, *chains):
            done = reader.get_workflow(flow.id)
            assert done.status is pgqueue.WorkflowStatus.SUCCEEDED
            # One job per step, each attempt run once: a release that came twice would be a
            # second job or a second run of one attempt.
            for job in done.jobs:
                attempts = [
                    row[0]
                    for row in db.execute(
                        "SELECT attempt FROM acceptance_executions WHERE job_id = %s", (job.id,)
                    ).fetchall()
                ]
                assert len(attempts) == len(set(attempts)) >= 1, (job, attempts)
    finally:
        reader.close()
    assert survivor.process.poll() is None
