"""The example API as its users see it, on a real PostgreSQL: an order's job commits with the
request's transaction or vanishes with it, `adrain()` runs the job here as a worker would, and
the status and wait endpoints report it."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from examples.fastapi.tasks import price_order
from pgqueue import App
from pgqueue.testing import adrain, assert_enqueued, assert_not_enqueued

pytestmark = pytest.mark.anyio


async def place(client: httpx.AsyncClient, item: str, quantity: int) -> dict[str, int]:
    response = await client.post("/orders", json={"item": item, "quantity": quantity})
    assert response.status_code == 201, response.text
    placed: dict[str, int] = response.json()
    return placed


async def test_placed_order_commits_its_pricing_job(client: httpx.AsyncClient) -> None:
    placed = await place(client, "widget", 3)

    assert_enqueued(price_order, args=[placed["order_id"], "widget", 3])


async def test_order_beyond_the_stock_leaves_no_job(
    client: httpx.AsyncClient, pgqueue_app: App
) -> None:
    # Five gadgets in stock: the order and its job are written, then the stock runs out and
    # the request's transaction rolls back with them.
    response = await client.post("/orders", json={"item": "gadget", "quantity": 6})

    assert response.status_code == 409, response.text
    assert_not_enqueued(price_order)
    assert await adrain(pgqueue_app) == []


async def test_drained_job_shows_in_the_status_endpoint(
    client: httpx.AsyncClient, pgqueue_app: App
) -> None:
    placed = await place(client, "gadget", 2)
    assert (await client.get(f"/jobs/{placed['job_id']}")).json()["status"] == "queued"

    [ran] = await adrain(pgqueue_app)

    assert (ran.id, ran.status) == (placed["job_id"], "succeeded")
    job = (await client.get(f"/jobs/{placed['job_id']}")).json()
    assert (job["status"], job["attempts"]) == ("succeeded", 1)
    assert job["result"] == {"order_id": placed["order_id"], "total_cents": 2400}


async def test_wait_endpoint_answers_with_the_result_once_the_job_has_run(
    client: httpx.AsyncClient, pgqueue_app: App
) -> None:
    placed = await place(client, "widget", 4)
    waiting = asyncio.create_task(client.get(f"/jobs/{placed['job_id']}/result?timeout=30"))

    await adrain(pgqueue_app)
    response = await asyncio.wait_for(waiting, 30)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"
    assert response.json()["result"] == {"order_id": placed["order_id"], "total_cents": 1000}


async def test_wait_endpoint_answers_202_while_the_job_is_queued(
    client: httpx.AsyncClient,
) -> None:
    placed = await place(client, "widget", 1)

    response = await client.get(f"/jobs/{placed['job_id']}/result", params={"timeout": 0.2})

    assert response.status_code == 202, response.text
    assert (response.json()["status"], response.json()["result"]) == ("queued", None)


async def test_unknown_job_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/jobs/424242")).status_code == 404
