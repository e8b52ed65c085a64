"""The shop's tasks, ported from Celery: run a worker with `pgqueue worker --app shop.tasks:app`
from examples/from_celery."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pgqueue
import shop.monitoring  # noqa: F401  (connects the failure reports)
from shop import services

app = pgqueue.App()  # PGQUEUE_DSN, else DATABASE_URL, else the embedded development database


@app.task(name="shop.charge_order", bind=True, max_attempts=4)
def charge_order(self: pgqueue.Task[..., str], order_id: int) -> str:
    total_cents = _order(order_id)["total_cents"]
    try:
        receipt = services.charge(order_id, total_cents)
    except services.GatewayTimeout as exc:
        raise self.retry(exc=exc, countdown=30) from exc
    with app.connect() as conn:  # one transaction, committed when the block ends
        conn.execute(
            "UPDATE shop_orders SET status = 'paid', receipt = %s WHERE id = %s",
            (receipt, order_id),
        )
        # In the same transaction as the new status: both commit, or neither.
        send_confirmation.apply_async((order_id,), connection=conn)
    return receipt


@app.task(
    name="shop.send_confirmation",
    queue="mail",
    autoretry_for=(ConnectionError,),
    retry_backoff=True,
    max_attempts=6,
)
def send_confirmation(order_id: int) -> None:
    with app.connect() as conn:
        services.send_email(conn, _order(order_id)["email"], f"Order {order_id} is paid")


@app.periodic(cron="0 3 * * *", tz="Europe/Paris", kwargs={"days": 1}, name="nightly-sales")
@app.task(name="shop.sales_report")
def sales_report(days: int) -> dict[str, Any]:
    with app.connect() as conn:
        row = conn.execute(
            "SELECT count(*), coalesce(sum(total_cents), 0) FROM shop_orders "
            "WHERE status = 'paid' AND created_at > now() - make_interval(days => %s)",
            (days,),
        ).fetchone()
    assert row is not None
    return {"days": days, "orders": row[0], "total_cents": row[1]}


@app.periodic(every=timedelta(minutes=10), name="release-stale-carts")
@app.task(name="shop.release_stale_carts")
def release_stale_carts() -> int:
    with app.connect() as conn:
        cursor = conn.execute(
            "UPDATE shop_orders SET status = 'cancelled' "
            "WHERE status = 'new' AND created_at < now() - interval '1 hour'"
        )
    return cursor.rowcount


def _order(order_id: int) -> dict[str, Any]:
    with app.connect() as conn:
        row = conn.execute(
            "SELECT email, total_cents FROM shop_orders WHERE id = %s", (order_id,)
        ).fetchone()
    if row is None:
        raise LookupError(f"order {order_id} does not exist")
    return {"email": row[0], "total_cents": row[1]}
