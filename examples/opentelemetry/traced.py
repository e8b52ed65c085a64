"""A traced pgqueue app: every enqueue and every attempt of its jobs is a span, and an attempt's
span is a child of the enqueue's, across processes, through the job's headers.

Run it (with the SDK printing spans to the terminal):

    pip install 'pgqueue[opentelemetry]' opentelemetry-sdk
    pgqueue migrate
    python traced.py                  # enqueues a receipt inside a "checkout" span
    pgqueue worker --app traced:app   # runs it: its span has the checkout's trace id
"""

from __future__ import annotations

from opentelemetry import trace

import pgqueue
from pgqueue.contrib.opentelemetry import instrument

app = pgqueue.App()
instrument(app)  # spans from the global TracerProvider, whenever one is configured
tracer = trace.get_tracer("shop")


@app.task(max_attempts=3, autoretry_for=(ConnectionError,), retry_backoff=0.1)
def send_receipt(order_id: int) -> str:
    # A span the task starts is a child of the attempt's span.
    with tracer.start_as_current_span("render receipt") as span:
        span.set_attribute("shop.order_id", order_id)
        if order_id < 0:
            raise ValueError(f"no order {order_id}")
        return f"receipt {order_id}"


def checkout(order_id: int) -> pgqueue.Job:
    """What a web request does: its own span, and the receipt's job enqueued inside it."""
    with tracer.start_as_current_span("checkout"):
        return send_receipt.delay(order_id)


def print_spans() -> None:
    """Configure the SDK to print every span (a real application exports them, over OTLP)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)


if __name__ == "__main__":
    print_spans()
    job = checkout(42)
    print(f"enqueued job {job.id} in trace {job.headers.get('traceparent')}")
