"""A torture run: hostile return values, exceptions and deeds against real worker processes.

Every hostile job must reach a final status within its attempts, every ordinary job beside
them must finish exactly once, and no worker may stop. Hypothesis draws the recipes with a
fixed seed (derandomized), so a run is repeatable.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.acceptance import apps
from tests.acceptance.conftest import SpawnWorker
from tests.acceptance.helpers import WorkerProcess, stop_gracefully
from tests.conftest import wait_until

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    # Text that can be stored: no NUL, no lone surrogate (those are hostile values instead).
    | st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.text(max_size=5).filter(lambda k: "\x00" not in k), children, max_size=3
        )
    ),
    max_leaves=8,
)
deeds = st.none() | st.sampled_from(apps.HOSTILE_DEEDS)
recipes = st.one_of(
    st.fixed_dictionaries(
        {"return": st.sampled_from(apps.HOSTILE_VALUES), "n": st.integers(0, 3), "deed": deeds}
    ),
    st.fixed_dictionaries({"raise": st.sampled_from(apps.HOSTILE_EXCEPTIONS), "deed": deeds}),
    st.fixed_dictionaries({"value": json_values, "deed": deeds}),
)
hostile_tasks = st.sampled_from([apps.hostile, apps.ahostile, apps.ahostile_timed])
FINAL = ("succeeded", "failed", "cancelled")
ORDINARY_PER_EXAMPLE = 4


def _assert_running(workers: list[WorkerProcess]) -> None:
    for worker in workers:
        assert worker.poll() is None, f"a worker stopped:\n{worker.log()[-5000:]}"


@pytest.mark.timeout(240)
def test_hostile_jobs_end_and_no_worker_stops_or_loses_another_job(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker
) -> None:
    workers = [
        spawn_worker("--concurrency", "4", ready=False),
        spawn_worker("--concurrency", "2", "--pool", "process", ready=False),
    ]
    for worker in workers:
        worker.wait_ready()
    ordinary: list[int] = []
    hostile: dict[int, dict[str, Any]] = {}

    @settings(
        max_examples=15,
        derandomize=True,
        database=None,
        deadline=None,
        # Shrinking would rerun failing examples against the same workers: report, not shrink.
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(jobs=st.lists(st.tuples(hostile_tasks, recipes), min_size=1, max_size=5))
    def example(jobs: list[tuple[Any, dict[str, Any]]]) -> None:
        ids = {}
        for n, (task, recipe) in enumerate(jobs):
            ids[task.apply_async(args=(recipe,), connection=db).id] = recipe
            if n < ORDINARY_PER_EXAMPLE:
                ordinary.append(apps.record.apply_async(args=(n,), connection=db).id)
        hostile.update(ids)

        def all_final() -> bool:
            rows = db.execute(
                "SELECT count(*) FROM pgqueue_all_jobs WHERE id = ANY(%s) AND status::text = "
                "ANY(%s)",
                (list(ids) + ordinary, list(FINAL)),
            ).fetchone()
            return rows is not None and rows[0] == len(ids) + len(ordinary)

        wait_until(all_final, timeout=30, interval=0.05, what="every job to end")
        _assert_running(workers)

    example()

    rows = db.execute(
        "SELECT id, status::text, attempts, max_attempts, result, error FROM pgqueue_all_jobs"
    ).fetchall()
    by_id = {row[0]: row for row in rows}
    for job_id, recipe in hostile.items():
        _, status, attempts, max_attempts, result, error = by_id[job_id]
        assert status in FINAL and attempts <= max_attempts, (recipe, by_id[job_id])
        if "value" in recipe and status == "succeeded":
            assert result == recipe["value"] or recipe["value"] is None
        if "return" in recipe:
            assert status == "failed", (recipe, by_id[job_id])
            assert error["type"] == "TypeError", (recipe, error)
            assert "cannot be stored as JSON" in error["message"], (recipe, error)
        if "raise" in recipe:
            assert status == "failed", (recipe, by_id[job_id])
            assert len(error["message"]) < 10_000
    for job_id in ordinary:
        assert by_id[job_id][1] == "succeeded"
    runs = db.execute(
        "SELECT job_id, count(DISTINCT attempt) FROM acceptance_executions GROUP BY job_id"
    ).fetchall()
    assert {job_id: count for job_id, count in runs} == dict.fromkeys(ordinary, 1)
    _assert_running(workers)
    for worker in workers:
        assert stop_gracefully(worker) == 0, worker.log()[-5000:]
        assert "CRITICAL" not in worker.log()
        assert "unexpected error" not in worker.log()
        # Still logging after tasks closed its stdout and stderr.
        assert worker.log().rstrip().endswith("stopped"), worker.log()[-2000:]
