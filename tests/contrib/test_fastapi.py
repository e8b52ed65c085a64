"""pgqueue in FastAPI: examples/fastapi driven through httpx's ASGI transport, lifespan and all,
against a real PostgreSQL and a real `pgqueue worker` process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

import pgqueue
from examples.fastapi.app import Session
from pgqueue.contrib.fastapi import lifespan
from tests.acceptance.helpers import WorkerProcess
from tests.conftest import wait_until

WORKER_APP = "examples.fastapi.tasks:queue"
OTHER_CONNECTIONS = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


@pytest.fixture
def example(dsn: str) -> Iterator[ModuleType]:
    """examples/fastapi/app.py, its queue pointed at this test's database."""
    from examples.fastapi import app as example

    example.queue.set_dsn(dsn)
    yield example
    example.queue.close()


@pytest.fixture
def worker(dsn: str, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A real `pgqueue worker` process running the example's tasks."""
    process = WorkerProcess(
        dsn, tmp_path / "worker.log", ["--concurrency", "2", "--poll-interval", "0.5"], WORKER_APP
    )
    try:
        yield process.launch().wait_ready()
    finally:
        process.cleanup()
        print(process.log())


@asynccontextmanager
async def serving(api: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `api` with its lifespan run around it, as a server would."""
    async with api.router.lifespan_context(api):
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://example") as client:
            yield client


def count(conn: psycopg.Connection[Any], sql: str) -> int:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def test_committed_request_leaves_the_order_and_its_job(
    example: ModuleType, conn: psycopg.Connection[Any]
) -> None:
    async def scenario() -> httpx.Response:
        async with serving(example.api) as client:
            return await client.post("/orders", json={"item": "widget", "quantity": 3})

    response = asyncio.run(scenario())

    assert response.status_code == 201, response.text
    placed = response.json()
    # Committed before the answer was sent: visible to anyone as soon as the client has it.
    row = conn.execute(
        "SELECT task_name, status::text, args FROM pgqueue_all_jobs WHERE id = %s",
        (placed["job_id"],),
    ).fetchone()
    assert row == (
        "examples.fastapi.tasks.price_order",
        "queued",
        [placed["order_id"], "widget", 3],
    )
    assert count(conn, "SELECT count(*) FROM example_orders") == 1


def test_failing_request_rolls_back_the_order_and_its_job(
    example: ModuleType, conn: psycopg.Connection[Any]
) -> None:
    async def scenario() -> httpx.Response:
        async with serving(example.api) as client:
            # Five gadgets in stock: the order and its job are written, then the stock fails.
            return await client.post("/orders", json={"item": "gadget", "quantity": 6})

    response = asyncio.run(scenario())

    assert response.status_code == 409, response.text
    assert response.json() == {"detail": "not enough gadget in stock"}
    assert count(conn, "SELECT count(*) FROM example_orders") == 0
    assert count(conn, "SELECT count(*) FROM pgqueue_all_jobs") == 0
    assert count(conn, "SELECT available FROM example_stock WHERE item = 'gadget'") == 5


def test_request_whose_commit_fails_is_not_told_it_succeeded(
    example: ModuleType, conn: psycopg.Connection[Any]
) -> None:
    # A check the database makes only at COMMIT: the endpoint returns, then the commit fails.
    conn.execute("CREATE TABLE tickets (n int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
    api = FastAPI(lifespan=example.lifespan)

    @api.post("/tickets", status_code=201)
    async def issue(session: Session) -> int:
        job = await example.price_order.aapply_async(args=(0, "widget", 1), connection=session)
        await session.execute(sa.text("INSERT INTO tickets VALUES (1), (1)"))
        return int(job.id)

    async def scenario() -> httpx.Response:
        async with api.router.lifespan_context(api):
            transport = httpx.ASGITransport(app=api, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
                return await client.post("/tickets")

    response = asyncio.run(scenario())

    # The example's session commits before the response is sent, so the failure is the answer.
    assert response.status_code == 500
    assert count(conn, "SELECT count(*) FROM pgqueue_all_jobs") == 0


def test_worker_runs_the_job_and_the_wait_endpoint_returns_its_result(
    example: ModuleType, worker: WorkerProcess
) -> None:
    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with serving(example.api) as client:
            placed = (await client.post("/orders", json={"item": "gadget", "quantity": 2})).json()
            waited = await client.get(f"/jobs/{placed['job_id']}/result", params={"timeout": 30})
            return waited, await client.get(f"/jobs/{placed['job_id']}")

    waited, status = asyncio.run(scenario())

    assert waited.status_code == 200, waited.text
    body = waited.json()
    assert body["status"] == "succeeded"
    assert body["result"] == {"order_id": 1, "total_cents": 2400}
    assert body["error"] is None
    assert status.status_code == 200
    assert status.json()["status"] == "succeeded"
    assert status.json()["attempts"] == 1


def test_wait_endpoint_answers_202_with_the_status_when_the_job_is_not_done(
    example: ModuleType,
) -> None:
    async def scenario() -> httpx.Response:
        async with serving(example.api) as client:
            placed = (await client.post("/orders", json={"item": "widget", "quantity": 1})).json()
            return await client.get(f"/jobs/{placed['job_id']}/result", params={"timeout": 0.2})

    response = asyncio.run(scenario())  # no worker: the job stays queued

    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    assert response.json()["result"] is None


def test_waiting_request_does_not_block_the_event_loop(example: ModuleType) -> None:
    async def scenario() -> tuple[httpx.Response, httpx.Response, bool]:
        async with serving(example.api) as client:
            placed = (await client.post("/orders", json={"item": "widget", "quantity": 1})).json()
            job_id = placed["job_id"]
            before = await connections(example.queue)
            waiting = asyncio.create_task(
                client.get(f"/jobs/{job_id}/result", params={"timeout": 30})
            )
            # The wait holds a connection of its own: once it is there, the request waits.
            await poll(lambda: connections(example.queue), lambda n: n > before)
            # Served on the same loop while the other request waits for its job.
            status = await client.get(f"/jobs/{job_id}")
            still_waiting = not waiting.done()
            # Finishing the job ends the wait at once (NOTIFY), long before its timeout.
            await example.queue.acancel(job_id, "no longer wanted")
            return await asyncio.wait_for(waiting, 20), status, still_waiting

    waited, status, still_waiting = asyncio.run(scenario())

    assert status.status_code == 200
    assert status.json()["status"] == "queued"
    assert still_waiting
    assert waited.status_code == 200
    assert waited.json()["status"] == "cancelled"
    assert waited.json()["error"]["message"] == "no longer wanted"


async def connections(queue: pgqueue.App) -> int:
    """Connections to the queue's database, but the one that asks."""
    async with await psycopg.AsyncConnection.connect(queue.dsn) as aconn:
        cur = await aconn.execute(OTHER_CONNECTIONS)
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def poll(
    read: Callable[[], Awaitable[int]], ok: Callable[[int], bool], timeout: float = 15.0
) -> None:
    """Until `ok(await read())`, without blocking the event loop; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not ok(await read()):
        assert time.monotonic() < deadline, "timed out polling"
        await asyncio.sleep(0.02)  # polling interval of a deadline-bound wait


def test_unknown_job_is_404(example: ModuleType) -> None:
    async def scenario() -> list[httpx.Response]:
        async with serving(example.api) as client:
            return [await client.get("/jobs/424242"), await client.get("/jobs/424242/result")]

    for response in asyncio.run(scenario()):
        assert response.status_code == 404
        assert "no job with id 424242" in response.json()["detail"]


def test_lifespan_refuses_to_start_on_a_database_not_migrated(empty_dsn: str) -> None:
    queue = pgqueue.App(empty_dsn)

    async def start() -> None:
        async with lifespan(queue)(FastAPI()):
            raise AssertionError("the application started")

    with pytest.raises(pgqueue.SchemaNotMigrated, match="pgqueue migrate"):
        asyncio.run(start())


def test_lifespan_closes_the_queues_connection_at_shutdown(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    queue = pgqueue.App(dsn)

    @queue.task
    def noop() -> None: ...

    api = FastAPI(lifespan=lifespan(queue))

    @api.post("/noop")
    async def enqueue() -> int:
        return (await noop.adelay()).id  # on the queue's own connection, committed at once

    async def scenario() -> int:
        async with serving(api) as client:
            job_id = int((await client.post("/noop")).json())
            assert others(conn) >= 1
        return job_id

    job_id = asyncio.run(scenario())

    assert conn.execute("SELECT 1 FROM pgqueue_all_jobs WHERE id = %s", (job_id,)).fetchone()
    wait_until(lambda: others(conn) == 0, what="the queue's connection to close")


def others(conn: psycopg.Connection[Any]) -> int:
    """Connections to this test's database but `conn`."""
    return count(conn, OTHER_CONNECTIONS)


def test_import_pgqueue_imports_no_framework() -> None:
    code = (
        "import sys, pgqueue, pgqueue.contrib; "
        "print(sorted(m for m in ('fastapi', 'pydantic', 'starlette') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
