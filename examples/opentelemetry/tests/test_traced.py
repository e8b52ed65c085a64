"""The traced app's spans, collected by the SDK's in-memory exporter, against real PostgreSQL:
one trace from the request's span to every attempt of the job and what the task traces."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import traced
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from pgqueue.contrib.opentelemetry import instrument
from pgqueue.testing import drain

pytestmark = pytest.mark.pgqueue_app(traced.app)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument(traced.app, tracer_provider=provider)
    traced.tracer = provider.get_tracer("shop")
    yield exporter
    instrument(traced.app)
    traced.tracer = trace.get_tracer("shop")


def by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        found.setdefault(span.name, []).append(span)
    return found


def test_one_trace_from_checkout_to_the_tasks_own_span(
    pgqueue_app: object, spans: InMemorySpanExporter
) -> None:
    job = traced.checkout(7)
    assert "traceparent" in job.headers

    ran = drain(traced.app)

    assert [r.status for r in ran] == ["succeeded"]
    found = by_name(spans)
    checkout = found["checkout"][0]
    send = found["traced.send_receipt send"][0]
    process = found["traced.send_receipt process"][0]
    render = found["render receipt"][0]
    assert {s.context.trace_id for s in (checkout, send, process, render)} == {
        checkout.context.trace_id
    }
    assert send.kind is SpanKind.PRODUCER and send.parent.span_id == checkout.context.span_id
    assert process.kind is SpanKind.CONSUMER and process.parent.span_id == send.context.span_id
    assert render.parent.span_id == process.context.span_id
    assert process.attributes["messaging.system"] == "pgqueue"
    assert process.attributes["messaging.message.id"] == str(job.id)


def test_a_failed_attempt_is_an_error_span(
    pgqueue_app: object, spans: InMemorySpanExporter
) -> None:
    traced.checkout(-1)
    ran = drain(traced.app)

    assert [r.status for r in ran] == ["failed"]
    process = by_name(spans)["traced.send_receipt process"][0]
    assert process.status.status_code is StatusCode.ERROR
    assert any(event.name == "exception" for event in process.events)
