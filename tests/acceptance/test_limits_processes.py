"""Fleet-wide limits with real `pgqueue worker` processes: a worker killed with SIGKILL while
it runs a limited job frees the job's place when the job is rescued."""

from __future__ import annotations

import itertools
import signal
from typing import Any

import psycopg

from tests.acceptance import apps
from tests.acceptance.conftest import SpawnWorker
from tests.acceptance.helpers import enqueue, job_row, set_flag, wait_started
from tests.conftest import wait_until


def test_a_killed_workers_limited_job_is_rescued_and_the_limit_still_holds(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker
) -> None:
    doomed = spawn_worker("--name", "doomed")
    jobs = [enqueue(db, apps.block_one_at_a_time, "after-kill") for _ in range(3)]
    wait_started(db, jobs[0])
    assert job_row(db, jobs[0])["worker_id"] == doomed.worker_id
    spawn_worker("--name", "survivor")
    # One at a time across both workers: the others wait, though both have free slots.
    assert [job_row(db, job)["status"] for job in jobs] == ["running", "queued", "queued"]

    assert doomed.kill() == -signal.SIGKILL
    set_flag(db, "after-kill")
    wait_until(
        lambda: all(job_row(db, job)["status"] == "succeeded" for job in jobs),
        timeout=60,
        what="every job done by the survivor",
    )
    assert job_row(db, jobs[0])["attempts"] == 2  # the killed attempt, then the rescued one
    intervals = db.execute(
        "SELECT started_at, finished_at FROM pgqueue_finished_jobs WHERE id = ANY(%s)"
        " ORDER BY started_at",
        (jobs,),
    ).fetchall()
    for (_, finished), (started, _) in itertools.pairwise(intervals):
        assert finished <= started, "two jobs of the limited task ran at once"
