"""The shop through Django's test client, on real PostgreSQL: an order and its jobs commit or
vanish together, pgqueue.testing.drain() runs the jobs in the test, and a real
`manage.py pgqueue_worker` runs them too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.db import transaction
from django.test import Client
from orders.models import Order
from orders.tasks import send_receipt, ship_order
from shop_testing import PROJECT, Worker, wait_until

from pgqueue.contrib.django import app
from pgqueue.testing import drain

pytestmark = pytest.mark.django_db(transaction=True)


def jobs(dsn: str) -> list[tuple[object, ...]]:
    """The queued and running jobs, read on a connection of the test's own."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT task_name, args, queue, priority FROM pgqueue_jobs ORDER BY id"
        ).fetchall()


def place(client: Client, **order: object) -> tuple[int, dict[str, object]]:
    response = client.post("/orders", json.dumps(order), content_type="application/json")
    return response.status_code, response.json()


def test_an_order_and_its_jobs_commit_together(client: Client, test_dsn: str) -> None:
    status, body = place(client, item="teapot", quantity=2)

    assert status == 201
    order_id = body["order_id"]
    assert jobs(test_dsn) == [
        ("orders.tasks.ship_order", [order_id], "default", 0),
        ("orders.tasks.send_receipt", [order_id], "default", 10),
    ]
    assert Order.objects.get(id=order_id).status == "placed"


def test_a_declined_payment_leaves_no_order_and_no_job(client: Client, test_dsn: str) -> None:
    status, body = place(client, item="teapot", quantity=2, card="declined")

    assert status == 402
    assert "card refused" in body["error"]
    assert Order.objects.count() == 0
    assert jobs(test_dsn) == []


def test_inside_atomic_the_job_is_invisible_until_commit(test_dsn: str) -> None:
    with transaction.atomic():
        job = ship_order.delay(7)
        assert jobs(test_dsn) == []  # Django's transaction is not committed yet
    assert jobs(test_dsn) == [("orders.tasks.ship_order", [7], "default", 0)]
    assert app.get_job(job.id).status.value == "queued"


def test_a_rolled_back_atomic_block_takes_its_jobs_along(test_dsn: str) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        ship_order.delay(7)
        send_receipt.enqueue(7)
        raise RuntimeError("rolled back")
    assert jobs(test_dsn) == []


def test_a_savepoint_rolled_back_takes_only_its_own_job(test_dsn: str) -> None:
    with transaction.atomic():
        ship_order.delay(1)
        try:
            with transaction.atomic():
                ship_order.delay(2)
                raise RuntimeError("inner block rolled back")
        except RuntimeError:
            pass
    assert [args for _, args, _, _ in jobs(test_dsn)] == [[1]]


def test_outside_atomic_the_job_commits_at_once(test_dsn: str) -> None:
    ship_order.delay(9)
    assert jobs(test_dsn) == [("orders.tasks.ship_order", [9], "default", 0)]


def test_delay_many_joins_the_atomic_block_too(test_dsn: str) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        ship_order.delay_many([(1,), (2,), (3,)])
        raise RuntimeError("rolled back")
    assert jobs(test_dsn) == []
    with transaction.atomic():
        ship_order.delay_many([(1,), (2,)])
    assert len(jobs(test_dsn)) == 2


def test_drain_runs_the_orders_jobs_in_the_test(client: Client) -> None:
    _, body = place(client, item="kettle", quantity=1)

    ran = drain(app)

    assert sorted((r.task_name, r.status) for r in ran) == [
        ("orders.tasks.send_receipt", "succeeded"),
        ("orders.tasks.ship_order", "succeeded"),
    ]
    assert Order.objects.get(id=body["order_id"]).status == "shipped"
    receipt = client.get(f"/receipts/{body['receipt_id']}").json()
    assert receipt == {
        "id": body["receipt_id"],
        "status": "SUCCESSFUL",
        "receipt": "receipt: 1 x kettle",
    }
    job = client.get(f"/jobs/{body['job_id']}").json()
    assert job["status"] == "succeeded" and job["result"] == "shipped"


def test_a_real_worker_runs_the_jobs_and_stops_on_sigterm(client: Client, worker: Worker) -> None:
    _, body = place(client, item="mug", quantity=3)

    wait_until(lambda: Order.objects.get(id=body["order_id"]).status == "shipped")
    wait_until(lambda: send_receipt.get_result(body["receipt_id"]).is_finished)
    result = send_receipt.get_result(body["receipt_id"])
    assert result.return_value == "receipt: 3 x mug"
    assert len(result.worker_ids) == 1
    assert worker.stop() == 0, worker.output()
    assert "Traceback" not in worker.output()


def test_manage_py_runs_pgqueue_commands(test_dsn: str) -> None:
    ship_order.delay(1)
    env = {"DJSHOP_DATABASE_URL": test_dsn, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "manage.py", "pgqueue", "status", "--json"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["queues"][0]["name"] == "default"
    assert status["queues"][0]["ready"] == 1


def test_a_process_pool_worker_sets_django_up_in_its_children(
    client: Client, test_dsn: str, tmp_path: Path
) -> None:
    _, body = place(client, item="bowl", quantity=2)
    pool = Worker(test_dsn, tmp_path / "pool.log", "--pool", "process", "--concurrency", "2")
    try:
        pool.wait_ready()
        wait_until(lambda: Order.objects.get(id=body["order_id"]).status == "shipped")
        wait_until(lambda: send_receipt.get_result(body["receipt_id"]).is_finished)
    finally:
        assert pool.stop() == 0, pool.output()
    assert send_receipt.get_result(body["receipt_id"]).return_value == "receipt: 2 x bowl"
