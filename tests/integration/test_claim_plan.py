"""The claim reads the claimable index, even on a table just filled and never analysed.

A planner without statistics that chose a sequential scan and a sort would make every claim
cost the whole backlog; the claim's shape (per-queue LIMIT in index order) must not allow it.
"""

from __future__ import annotations

from typing import Any

import psycopg

import pgqueue
from pgqueue import queries


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(_plan_nodes(child))
    return nodes


def test_claim_uses_the_claimable_index_on_a_fresh_table_without_statistics(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    @app.task(queue="bulk")
    def noop() -> None: ...

    conn.execute("VACUUM ANALYZE pgqueue_jobs")  # its statistics now say: empty
    noop.delay_many([() for _ in range(20_000)])
    # EXPLAIN without ANALYZE plans the statement and runs nothing.
    row = conn.execute(
        "EXPLAIN (FORMAT JSON) " + queries.CLAIM_JOBS,
        {"queues": ["bulk"], "limit": 10, "worker_id": 1},
    ).fetchone()
    assert row is not None
    plan = row[0][0]["Plan"]
    scans = [
        (node["Node Type"], node.get("Relation Name"), node.get("Index Name"))
        for node in _plan_nodes(plan)
        if node.get("Relation Name") == "pgqueue_jobs"
    ]
    assert ("Index Scan", "pgqueue_jobs", "pgqueue_jobs_claimable_idx") in scans, scans
    assert not any(kind == "Seq Scan" for kind, _, _ in scans), scans
