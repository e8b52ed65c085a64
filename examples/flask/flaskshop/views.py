"""The shop's views: place an order (its job in the same transaction), and read an order or
a job."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, request

from flaskshop.extensions import db, queue
from flaskshop.models import Order
from flaskshop.tasks import ship_order
from pgqueue import JobNotFound

shop = Blueprint("shop", __name__)


class PaymentDeclined(Exception):
    """The card was refused: the order must not exist, and neither must its job."""


def authorize_payment(card: str, amount: int) -> None:
    if card == "declined":
        raise PaymentDeclined(f"card refused for {amount} item(s)")


@shop.post("/orders")
def place_order() -> tuple[dict[str, Any], int]:
    data = request.get_json(force=True)
    order = Order(item=str(data["item"]), quantity=int(data["quantity"]))
    db.session.add(order)
    db.session.flush()  # the order's id, in the still-open transaction
    job = ship_order.apply_async((order.id,), connection=db.session)
    # A failure from here on rolls back the order and its job alike.
    authorize_payment(str(data.get("card", "ok")), order.quantity)
    db.session.commit()
    return {"order_id": order.id, "job_id": job.id}, 201


@shop.errorhandler(PaymentDeclined)
def payment_declined(exc: PaymentDeclined) -> tuple[dict[str, Any], int]:
    db.session.rollback()
    return {"error": str(exc)}, 402


@shop.get("/orders/<int:order_id>")
def show_order(order_id: int) -> dict[str, Any]:
    order = db.get_or_404(Order, order_id)
    return {"id": order.id, "item": order.item, "quantity": order.quantity, "status": order.status}


@shop.get("/jobs/<int:job_id>")
def show_job(job_id: int) -> dict[str, Any]:
    try:
        job = queue.get_job(job_id)
    except JobNotFound:
        abort(404)
    return {
        "id": job.id,
        "task": job.task_name,
        "status": str(job.status),
        "attempts": job.attempts,
        "result": job.result,
        "error": job.error,
    }
