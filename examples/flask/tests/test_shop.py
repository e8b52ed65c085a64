"""The shop as its users see it, on a real PostgreSQL: an order's shipping job commits with
the order or vanishes with it, and `drain()` runs the job here, as a worker would."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import Flask
from flaskshop.extensions import db, queue
from flaskshop.models import Order
from flaskshop.tasks import ship_order

from pgqueue import App
from pgqueue.testing import assert_enqueued, assert_not_enqueued, drain

# The App the `pgqueue_app` fixture points at each test's database: the extension's.
pytestmark = pytest.mark.pgqueue_app(queue.pgqueue_app)


def orders(shop: Flask) -> list[tuple[str, int, str]]:
    with shop.app_context():
        rows = db.session.execute(sa.select(Order.item, Order.quantity, Order.status))
        return [tuple(row) for row in rows]


def test_placed_order_commits_its_shipping_job(shop: Flask) -> None:
    response = shop.test_client().post("/orders", json={"item": "teapot", "quantity": 2})

    assert response.status_code == 201
    assert_enqueued(ship_order, args=[response.json["order_id"]])
    assert orders(shop) == [("teapot", 2, "new")]


def test_declined_payment_leaves_neither_order_nor_job(shop: Flask, pgqueue_app: App) -> None:
    response = shop.test_client().post(
        "/orders", json={"item": "teapot", "quantity": 2, "card": "declined"}
    )

    assert response.status_code == 402
    assert_not_enqueued(ship_order)
    assert orders(shop) == []
    assert drain(pgqueue_app) == []


def test_drain_ships_the_order_and_the_job_view_shows_it(shop: Flask, pgqueue_app: App) -> None:
    client = shop.test_client()
    placed = client.post("/orders", json={"item": "kettle", "quantity": 3}).json
    assert client.get(f"/jobs/{placed['job_id']}").json["status"] == "queued"

    [ran] = drain(pgqueue_app)

    assert (ran.id, ran.status, ran.result) == (placed["job_id"], "succeeded", "shipped 3 x kettle")
    # The task used db.session: it ran in the shop's app context.
    assert client.get(f"/orders/{placed['order_id']}").json["status"] == "shipped"
    job = client.get(f"/jobs/{placed['job_id']}").json
    assert (job["status"], job["attempts"], job["result"]) == ("succeeded", 1, "shipped 3 x kettle")


def test_job_view_of_an_unknown_job_is_404(shop: Flask) -> None:
    assert shop.test_client().get("/jobs/424242").status_code == 404
