"""The demo's tasks: a shop that charges orders exactly once, sends receipts, scores orders
asynchronously, and calls a flaky service that pgqueue retries.

Run a worker for them with `pgqueue worker --app tasks:app` from this folder.
"""

from __future__ import annotations

import asyncio

import pgqueue

app = pgqueue.App()


@app.task
def send_receipt(order_id: int) -> str:
    """Reads the order that was committed together with this job."""
    with app.connect() as conn:
        row = conn.execute(
            "SELECT item, quantity FROM demo_orders WHERE id = %s", (order_id,)
        ).fetchone()
    if row is None:
        raise LookupError(f"order {order_id} does not exist")
    item, quantity = row
    return f"receipt for order {order_id}: {quantity} x {item}"


@app.task(queue="scoring", priority=5)
async def score_order(order_id: int, quantity: int) -> dict[str, int]:
    """An async task: runs on the worker's event loop."""
    await asyncio.sleep(0.01)
    return {"order_id": order_id, "score": quantity * 10}


@app.task(transactional=True, max_attempts=5, autoretry_for=(ConnectionError,))
def charge_order(order_id: int) -> str:
    """Charges the order exactly once: the charge row and this job's SUCCEEDED commit in one
    transaction. If the worker dies or the attempt fails, both roll back and the job runs
    again; a retried job can never charge twice."""
    job = pgqueue.current_job()
    assert job is not None
    job.connection.execute(
        "INSERT INTO demo_charges (order_id, amount_cents) "
        "SELECT id, quantity * 1999 FROM demo_orders WHERE id = %s",
        (order_id,),
    )
    return f"order {order_id} charged once"


@app.task(max_attempts=3, retry_backoff=0.2, autoretry_for=(ConnectionError,))
def call_flaky_service(order_id: int) -> str:
    """Fails on its first attempt; pgqueue retries it after a short backoff."""
    job = pgqueue.current_job()
    assert job is not None
    if job.attempt == 1:
        raise ConnectionError("the payment service did not answer")
    return f"order {order_id} confirmed on attempt {job.attempt}"
