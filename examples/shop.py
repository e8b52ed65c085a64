"""The demo application: it places orders with SQLAlchemy and enqueues their jobs in the
same transaction, so a job exists exactly when its order does.
"""

from __future__ import annotations

import psycopg
import sqlalchemy as sa
from sqlalchemy.orm import Session
from tasks import app, call_flaky_service, charge_order, score_order, send_receipt

import pgqueue

metadata = sa.MetaData()
orders = sa.Table(
    "demo_orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("item", sa.Text, nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
)
charges = sa.Table(
    "demo_charges",
    metadata,
    sa.Column("order_id", sa.Integer, nullable=False),
    sa.Column("amount_cents", sa.Integer, nullable=False),
)


def engine() -> sa.Engine:
    # The same database as the queue; any SQLAlchemy engine on psycopg 3 works. `creator`
    # accepts every DSN form pgqueue does: a URL or a libpq "host=... dbname=..." string.
    dsn = app.dsn
    return sa.create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(dsn))


def place_order(session: Session, item: str, quantity: int) -> list[pgqueue.Job]:
    """Insert an order and enqueue its jobs; nothing is visible to workers until commit."""
    order_id = session.execute(
        orders.insert().values(item=item, quantity=quantity).returning(orders.c.id)
    ).scalar_one()
    return [
        charge_order.apply_async(args=(order_id,), connection=session),
        send_receipt.apply_async(args=(order_id,), connection=session),
        score_order.apply_async(args=(order_id, quantity), connection=session),
        call_flaky_service.apply_async(args=(order_id,), connection=session),
    ]
