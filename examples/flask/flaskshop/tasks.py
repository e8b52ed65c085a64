"""The shop's tasks. A worker runs each in an app context, so `db.session` works in them."""

from __future__ import annotations

from flaskshop.extensions import db, queue
from flaskshop.models import Order


@queue.task(max_attempts=3)
def ship_order(order_id: int) -> str:
    """Mark the order shipped; the job exists only if the order was committed."""
    order = db.session.get(Order, order_id)
    if order is None:  # cannot happen: the job was committed with its order
        raise LookupError(f"no order {order_id}")
    order.status = "shipped"
    db.session.commit()
    return f"shipped {order.quantity} x {order.item}"
