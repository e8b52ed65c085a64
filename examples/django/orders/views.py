"""Place an order and enqueue its jobs in one transaction; read an order, a job, a receipt."""

import json

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.tasks.exceptions import TaskResultDoesNotExist
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from orders.models import Order
from orders.tasks import send_receipt, ship_order
from pgqueue import JobNotFound
from pgqueue.contrib.django import app


class PaymentDeclined(Exception):
    """The card was refused: the order must not exist, and neither must its jobs."""


def authorize_payment(card: str, amount: int) -> None:
    if card == "declined":
        raise PaymentDeclined(f"card refused for {amount} item(s)")


@csrf_exempt
@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    data = json.loads(request.body)
    try:
        with transaction.atomic():
            order = Order.objects.create(item=str(data["item"]), quantity=int(data["quantity"]))
            # Both jobs are written in this block's transaction, on Django's connection:
            # no on_commit, and nothing to pass.
            job = ship_order.delay(order.id)
            receipt = send_receipt.enqueue(order.id)
            # A failure from here on rolls back the order and its jobs alike.
            authorize_payment(str(data.get("card", "ok")), order.quantity)
    except PaymentDeclined as exc:
        return JsonResponse({"error": str(exc)}, status=402)
    return JsonResponse(
        {"order_id": order.id, "job_id": job.id, "receipt_id": receipt.id}, status=201
    )


@require_GET
def show_order(request: HttpRequest, order_id: int) -> JsonResponse:
    try:
        order = Order.objects.get(id=order_id)
    except Order.DoesNotExist:
        return JsonResponse({"error": f"no order {order_id}"}, status=404)
    return JsonResponse({"id": order.id, "item": order.item, "status": order.status})


@require_GET
def show_job(request: HttpRequest, job_id: int) -> JsonResponse:
    try:
        job = app.get_job(job_id)
    except JobNotFound:
        return JsonResponse({"error": f"no job {job_id}"}, status=404)
    return JsonResponse(
        {"id": job.id, "task": job.task_name, "status": job.status.value, "result": job.result}
    )


@require_GET
def show_receipt(request: HttpRequest, result_id: str) -> JsonResponse:
    try:
        result = send_receipt.get_result(result_id)
    except TaskResultDoesNotExist:
        return JsonResponse({"error": f"no receipt {result_id}"}, status=404)
    body = {"id": result.id, "status": result.status.value}
    if result.is_finished and not result.errors:
        body["receipt"] = result.return_value
    return JsonResponse(body)
