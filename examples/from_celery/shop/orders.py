"""The calling code: the web side of the shop places orders and asks how they went."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from shop.tasks import app, charge_order


def create_tables(conn: psycopg.Connection[Any]) -> None:
    conn.execute((Path(__file__).parent / "schema.sql").read_text())


def place_order(conn: psycopg.Connection[Any], email: str, total_cents: int) -> int:
    """Record the order and enqueue its charge in one transaction: returns the job id."""
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO shop_orders (email, total_cents) VALUES (%s, %s) RETURNING id",
            (email, total_cents),
        ).fetchone()
        assert row is not None
        job = charge_order.apply_async((row[0],), connection=conn)
    return job.id


def payment_receipt(job_id: int, timeout: float = 60) -> str:
    """Wait for the charge to finish; raises pgqueue.JobFailed if it failed."""
    receipt: str = app.get_job(job_id).wait(timeout=timeout)
    return receipt


if __name__ == "__main__":  # python -m shop.orders, with a worker running
    with app.connect() as conn:
        create_tables(conn)
        job_id = place_order(conn, "ada@example.com", 4200)
    print("charged:", payment_receipt(job_id))
