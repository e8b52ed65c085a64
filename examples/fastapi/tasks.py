"""The example's queue and its one task; the worker imports this module alone."""

from __future__ import annotations

import pgqueue

# The DSN comes from PGQUEUE_DSN (or DATABASE_URL) when first needed, in the web process and
# in the worker alike.
queue = pgqueue.App()

PRICES_CENTS = {"widget": 250, "gadget": 1200}


@queue.task
def price_order(order_id: int, item: str, quantity: int) -> dict[str, int]:
    """Work that does not belong in the request: here, pricing an order."""
    return {"order_id": order_id, "total_cents": PRICES_CENTS[item] * quantity}
