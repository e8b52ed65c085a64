"""The app a `pgqueue worker` subprocess runs in the OpenTelemetry tests: instrumented on
import, its spans written as JSON lines to the file PGQUEUE_TEST_SPANS names (by every process
that loads it: the worker, and the children of `--pool process`)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import pgqueue
from pgqueue.contrib.opentelemetry import instrument


class JsonLinesExporter(SpanExporter):
    """Appends one JSON object per ended span to a file (one write per span)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a", encoding="utf-8") as out:
            for span in spans:
                context = span.get_span_context()
                assert context is not None
                record = {
                    "name": span.name,
                    "kind": span.kind.name,
                    "trace_id": context.trace_id,
                    "span_id": context.span_id,
                    "parent_id": span.parent.span_id if span.parent else None,
                    "attributes": dict(span.attributes or {}),
                    "status": span.status.status_code.name,
                    "pid": os.getpid(),
                }
                out.write(json.dumps(record) + "\n")
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(
    SimpleSpanProcessor(JsonLinesExporter(os.environ["PGQUEUE_TEST_SPANS"]))
)
tracer = provider.get_tracer("tests.contrib.otel_app")

app = pgqueue.App()  # the worker's DSN comes from PGQUEUE_DSN
instrument(app, tracer_provider=provider)


@app.task(name="otel.sync_step")
def sync_step(n: int) -> int:
    with tracer.start_as_current_span("inside sync_step"):
        return n + 1


@app.task(name="otel.async_step")
async def async_step(n: int) -> int:
    with tracer.start_as_current_span("inside async_step"):
        return n * 2
