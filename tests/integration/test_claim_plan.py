"""The claim, and the checks every worker runs each second: what they read, and where the claim
starts.

It reads the claimable index, even on a table just filled and never analysed (a planner
without statistics that chose a sequential scan and a sort would make every claim cost the
whole backlog), and touches only the rows it claims, even on statistics taken while the queue
was empty; and, given a position, it starts there rather than at the start of the index,
whose dead entries an old snapshot can keep from being cleaned, and reads lower priorities only
once the position's priority has run out.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import psycopg

import pgqueue
from pgqueue import queries
from pgqueue._connection import HOT_PATH_SETTINGS, ReconnectingConnection
from pgqueue.claim import Claim, claim_jobs, claim_params
from pgqueue.complete import outcomes_document, write_outcomes
from pgqueue.outcome import ClaimedJob, Succeeded


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
        "EXPLAIN (FORMAT JSON) " + queries.CLAIM_JOBS, _params(["bulk"], [None])
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


def _jobs_rows_read(plan: dict[str, Any]) -> int:
    """The most rows any one scan of pgqueue_jobs read (returned or filtered out, over all its
    loops), in an EXPLAIN ANALYZE plan: a scan of the backlog shows here."""
    return max(
        int(
            (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0))
            * node.get("Actual Loops", 1)
        )
        for node in _plan_nodes(plan)
        if node.get("Relation Name") == "pgqueue_jobs" and "Scan" in node["Node Type"]
    )


def test_claim_and_expiry_touch_only_their_rows_on_statistics_taken_while_empty(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    """The usual life of a queue: analysed (by autovacuum) while drained, then a burst. On
    those statistics the planner believes the table empty; a claim joined to its picked rows
    then walked the whole primary key, and the per-second expiry check did the same."""

    @app.task(queue="bulk")
    def noop() -> None: ...

    noop.delay_many([() for _ in range(2_000)])
    conn.execute("DELETE FROM pgqueue_jobs")
    conn.execute("ANALYZE pgqueue_jobs")  # no live rows, but pages: estimates of ~0 rows
    noop.delay_many([() for _ in range(20_000)])
    worker_id = _worker_id(conn)
    statements = {
        "claim": (queries.CLAIM_JOBS, claim_params(["bulk"], 10, worker_id)),
        "expiry": (queries.EXPIRE_QUEUED_JOBS, {}),
    }
    for name, (sql, params) in statements.items():
        row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchone()
        assert row is not None
        worst = _jobs_rows_read(row[0][0]["Plan"])
        assert worst <= 100, (name, worst)


def _success_of_every_running_job(conn: psycopg.Connection[Any], expected: int) -> str:
    """COMPLETE_JOBS's parameter: a success for each running job (there must be `expected`)."""
    claimed = conn.execute(
        "SELECT id, attempts, lease FROM pgqueue_jobs WHERE status = 'running'"
    ).fetchall()
    assert len(claimed) == expected
    return outcomes_document(
        [
            Succeeded(ClaimedJob(job_id, "bulk", "noop", [], {}, 0, attempt, 3, lease), "null")
            for job_id, attempt, lease in claimed
        ]
    )


def test_worker_claims_and_completions_use_index_scans_on_statistics_of_a_few_rows(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    """Statistics taken with a handful of jobs queued: the planner then preferred, for a claim
    after a position, a bitmap scan and sort of the whole backlog. The worker's claim and
    completer connections run with HOT_PATH_SETTINGS, which leave only the index scans."""

    @app.task(queue="bulk")
    def noop() -> None: ...

    noop.delay_many([() for _ in range(2_000)])
    conn.execute("DELETE FROM pgqueue_jobs WHERE id NOT IN (SELECT id FROM pgqueue_jobs LIMIT 5)")
    conn.execute("ANALYZE pgqueue_jobs")
    noop.delay_many([() for _ in range(20_000)])
    worker_id = _worker_id(conn)
    position = conn.execute(
        "SELECT priority, run_at, id FROM pgqueue_jobs ORDER BY id OFFSET 100 LIMIT 1"
    ).fetchone()
    assert position is not None
    with psycopg.connect(app.dsn, autocommit=True) as worker_conn:
        worker_conn.execute(HOT_PATH_SETTINGS)
        claims = {
            "after a position": claim_params(["bulk"], 10, worker_id, {"bulk": [tuple(position)]}),
            "from the start": claim_params(["bulk"], 10, worker_id),
            "on into lower priorities": claim_params(
                ["bulk"], 10, worker_id, {"bulk": [(5, position[1], position[2])]}
            ),
        }
        for name, params in claims.items():
            row = worker_conn.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + queries.CLAIM_JOBS, params
            ).fetchone()
            assert row is not None
            worst = _jobs_rows_read(row[0][0]["Plan"])
            assert worst <= 100, (name, worst)
        outcomes = _success_of_every_running_job(worker_conn, expected=30)
        row = worker_conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + queries.COMPLETE_JOBS, {"outcomes": outcomes}
        ).fetchone()
        assert row is not None
        worst = _jobs_rows_read(row[0][0]["Plan"])
        assert worst <= 100, ("completion", worst)


def _generic_plan(
    conn: psycopg.Connection[Any], sql: str, params: dict[str, Any]
) -> dict[str, Any]:
    """EXPLAIN ANALYZE of `sql` as a prepared statement run with its generic plan, the plan a
    worker's connection runs (HOT_PATH_SETTINGS force it): one planned for any parameters,
    where EXPLAIN of the statement itself would plan for these ones."""
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", sql)))  # in order of appearance
    conn.execute(f"PREPARE hot_path_statement AS {queries.as_libpq(sql, names)}")
    try:
        types = conn.execute(
            "SELECT parameter_types::text[] FROM pg_prepared_statements"
            " WHERE name = 'hot_path_statement'"
        ).fetchone()
        assert types is not None
        arguments = ", ".join(
            f"%({name})s::{type_}" for name, type_ in zip(names, types[0], strict=True)
        )
        # EXPLAIN EXECUTE takes no bound parameters: the values are written into the text.
        row = (
            psycopg.ClientCursor(conn)
            .execute(
                f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE hot_path_statement({arguments})", params
            )
            .fetchone()
        )
    finally:
        conn.execute("DEALLOCATE hot_path_statement")
    assert row is not None
    return dict(row[0][0]["Plan"])


def test_the_worker_plans_its_claim_and_outcome_statements_once(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    """A claim of a few jobs looked cheaper to the planner planned for its own LIMIT, so it
    planned every claim afresh, which took longer than running it (a burst drained 30% slower).
    The worker's connections use one generic plan: it must never be a custom one, and the
    generic plan must touch only the rows it claims or ends, on statistics taken while the
    queue was empty, from the start of a queue or from a position."""

    @app.task(queue="bulk")
    def noop() -> None: ...

    conn.execute("ANALYZE pgqueue_jobs")  # empty: the statistics of a drained queue
    noop.delay_many([() for _ in range(20_000)])
    worker_id = _worker_id(conn)

    async def claim_as_the_worker_does() -> list[tuple[str, int, int]]:
        hot_path = ReconnectingConnection(app, HOT_PATH_SETTINGS)
        try:
            aconn = await hot_path.get()
            positions = None
            for limit in (1, 2, 3, 1, 2, 3, 1, 2):  # slots freed a few at a time
                claim = await claim_jobs(aconn, ["bulk"], limit, worker_id, positions)
                positions = {queue: list(last.values()) for queue, last in claim.last.items()}
                await write_outcomes(aconn, [Succeeded(job, "null") for job in claim.jobs])
            cur = await aconn.execute(
                "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
            )
            return [(str(r[0]), int(r[1]), int(r[2])) for r in await cur.fetchall()]
        finally:
            await hot_path.reset()

    prepared = asyncio.run(claim_as_the_worker_does())
    plans = {
        name: (generic, custom)
        for statement, generic, custom in prepared
        for name, marker in (("claim", "picked AS"), ("outcomes", "jsonb_to_recordset"))
        if marker in statement
    }
    assert set(plans) == {"claim", "outcomes"}, prepared
    for name, (generic, custom) in plans.items():
        assert custom == 0 and generic > 0, (name, generic, custom)

    position = conn.execute(
        "SELECT priority, run_at, id FROM pgqueue_jobs WHERE status = 'queued'"
        " ORDER BY id OFFSET 100 LIMIT 1"
    ).fetchone()
    assert position is not None
    conn.execute(HOT_PATH_SETTINGS)
    claims = {
        "after a position": claim_params(["bulk"], 3, worker_id, {"bulk": [tuple(position)]}),
        "from the start": claim_params(["bulk"], 3, worker_id),
        "on into lower priorities": claim_params(
            ["bulk"], 3, worker_id, {"bulk": [(5, position[1], position[2])]}
        ),
    }
    for name, params in claims.items():
        worst = _jobs_rows_read(_generic_plan(conn, queries.CLAIM_JOBS, params))
        assert worst <= 100, (name, worst)
    outcomes = _success_of_every_running_job(conn, expected=9)
    plan = _generic_plan(conn, queries.COMPLETE_JOBS, {"outcomes": outcomes})
    assert _jobs_rows_read(plan) <= 100, ("outcomes", _jobs_rows_read(plan))
    assert conn.execute(
        "SELECT count(*) FROM pgqueue_jobs WHERE status = 'running'"
    ).fetchone() == (0,)


def test_per_second_checks_do_not_read_every_running_job(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    """Each worker rescues lost workers' jobs and looks for cancel requests it missed every
    second, on the maintenance connection (default planner settings). Neither may read every
    running job: under an old snapshot each running job leaves a dead index entry that cannot
    be cleaned, and 300,000 of them cost 50 ms a pass."""

    @app.task(queue="bulk")
    def noop() -> None: ...

    conn.execute("ANALYZE pgqueue_jobs")  # empty: the statistics of a drained queue
    noop.delay_many([() for _ in range(2_000)])
    worker_id = _worker_id(conn)
    conn.execute(
        "UPDATE pgqueue_jobs SET status = 'running', attempts = 1, worker_id = %s", (worker_id,)
    )
    statements = {
        "rescue": (queries.RESCUE_LOST_JOBS, {"lock_grace": 60, "heartbeat_timeout": 60}),
        "cancel requests": (queries.CANCEL_REQUESTS_FOR_WORKER, {"worker_id": worker_id}),
    }
    for name, (sql, params) in statements.items():
        row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchone()
        assert row is not None
        worst = _jobs_rows_read(row[0][0]["Plan"])
        assert worst <= 100, (name, worst)


def _params(queues: list[str], positions: list[Any]) -> dict[str, Any]:
    after = {q: [tuple(p)] for q, p in zip(queues, positions, strict=True) if p}
    return claim_params(queues, 10, 1, after)


def _worker_id(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "INSERT INTO pgqueue_workers (name, hostname, pid, queues, concurrency)"
        " VALUES ('test', 'test', 1, '{q}', 10) RETURNING id"
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_claim_after_a_position_takes_only_what_sorts_after_it(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    @app.task(queue="q")
    def noop() -> None: ...

    ids = noop.delay_many([() for _ in range(8)])
    urgent = noop.apply_async(priority=5).id
    worker_id = _worker_id(conn)
    position = conn.execute(
        "SELECT priority, run_at, id FROM pgqueue_jobs WHERE id = %s", (ids[3],)
    ).fetchone()
    assert position is not None

    async def claims() -> tuple[Claim, Claim]:
        async with await psycopg.AsyncConnection.connect(app.dsn, autocommit=True) as aconn:
            after = await claim_jobs(aconn, ["q"], 10, worker_id, {"q": [tuple(position)]})
            return after, await claim_jobs(aconn, ["q"], 10, worker_id)

    after, whole = asyncio.run(claims())
    assert [job.id for job in after.jobs] == ids[4:]
    assert after.last["q"][0][2] == ids[-1]
    # Read from the start: what sorts first (the higher priority), then the rest.
    assert [job.id for job in whole.jobs] == [urgent, *ids[:4]]


def test_a_claim_after_a_position_starts_there_in_the_index(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    @app.task(queue="bulk")
    def noop() -> None: ...

    noop.delay_many([() for _ in range(1000)])
    position = conn.execute(
        "SELECT priority, run_at, id FROM pgqueue_jobs ORDER BY id OFFSET 500 LIMIT 1"
    ).fetchone()
    row = conn.execute(
        "EXPLAIN (FORMAT JSON) " + queries.CLAIM_JOBS, _params(["bulk"], [position])
    ).fetchone()
    assert row is not None
    conditions = [
        node.get("Index Cond", "")
        for node in _plan_nodes(row[0][0]["Plan"])
        if node.get("Index Name") == "pgqueue_jobs_claimable_idx"
    ]
    assert any("ROW(run_at, id) > ROW(" in condition for condition in conditions), conditions
