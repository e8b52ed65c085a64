"""The shop's tasks: found by `manage.py pgqueue_worker`, as every installed app's tasks.py is.

`ship_order` is a pgqueue task (retries, timeouts, every pgqueue option); `send_receipt` is a
task of Django's own Tasks framework, which the PgQueueBackend in settings.TASKS runs on
pgqueue. Both are enqueued in the view's `transaction.atomic()` block.
"""

from django.tasks import task

from orders.models import Order
from pgqueue.contrib.django import app


@app.task(max_attempts=5, timeout=60)
def ship_order(order_id: int) -> str:
    updated = Order.objects.filter(id=order_id, status="placed").update(status="shipped")
    return "shipped" if updated else "already shipped"


@task(priority=10)
def send_receipt(order_id: int) -> str:
    order = Order.objects.get(id=order_id)
    return f"receipt: {order.quantity} x {order.item}"
