"""pgqueue.contrib.opentelemetry: one trace from the enqueue to every attempt, read back from the
SDK's in-memory exporter with real workers on a real database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import pgqueue
from pgqueue.contrib.opentelemetry import instrument, uninstrument
from pgqueue.testing import drain
from tests.acceptance.helpers import WorkerProcess
from tests.conftest import WorkerThread, wait_until

StartWorker = Callable[..., WorkerThread]


@dataclass
class Traced:
    """An instrumented app and the spans it made."""

    app: pgqueue.App
    exporter: InMemorySpanExporter
    tracer: trace.Tracer

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.spans(name)
        assert len(found) == 1, [s.name for s in self.exporter.get_finished_spans()]
        return found[0]


@pytest.fixture
def traced(dsn: str) -> Iterator[Traced]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = pgqueue.App(dsn)
    instrument(app, tracer_provider=provider)
    yield Traced(app, exporter, provider.get_tracer("tests"))
    uninstrument(app)
    app.close()
    provider.shutdown()


def _ids(span: ReadableSpan) -> tuple[int, int]:
    context = span.get_span_context()
    assert context is not None
    return context.trace_id, context.span_id


def _parent(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def assert_child_of(child: ReadableSpan, parent: ReadableSpan) -> None:
    assert _ids(child)[0] == _ids(parent)[0], "not in the same trace"
    assert _parent(child) == _ids(parent)[1], "not a child of that span"


def test_the_enqueue_span_is_the_parent_of_the_attempt_span(
    traced: Traced, start_worker: StartWorker
) -> None:
    seen: list[dict[str, Any]] = []

    @traced.app.task(name="otel.add")
    def add(a: int, b: int) -> int:
        job = pgqueue.current_job()
        assert job is not None
        seen.append(job.headers)
        return a + b

    start_worker(traced.app)
    job = add.delay(2, 3)
    assert job.wait(timeout=30) == 5

    send, process = traced.one("otel.add send"), traced.one("otel.add process")
    assert send.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert_child_of(process, send)
    assert send.parent is None  # nothing was current where the job was enqueued
    for span, operation in ((send, "send"), (process, "process")):
        assert span.attributes is not None
        assert span.attributes["messaging.system"] == "pgqueue"
        assert span.attributes["messaging.operation.type"] == operation
        assert span.attributes["messaging.destination.name"] == "default"
        assert span.attributes["messaging.message.id"] == str(job.id)
        assert span.attributes["pgqueue.task.name"] == "otel.add"
    assert process.attributes is not None
    assert process.attributes["pgqueue.job.attempt"] == 1
    assert process.attributes["pgqueue.job.outcome"] == "succeeded"
    assert process.status.status_code is StatusCode.UNSET
    # The job carries the W3C trace context of the send span, which the task can read.
    trace_id, span_id = _ids(send)
    assert seen[0]["traceparent"].startswith(f"00-{trace_id:032x}-{span_id:016x}-")
    assert job.headers == seen[0]


def test_the_enqueue_span_is_a_child_of_the_callers_span(
    traced: Traced, start_worker: StartWorker
) -> None:
    @traced.app.task(name="otel.noop")
    def noop() -> None:
        return None

    start_worker(traced.app)
    with traced.tracer.start_as_current_span("request"):
        job = noop.delay()
    job.wait(timeout=30)
    request = traced.one("request")
    send, process = traced.one("otel.noop send"), traced.one("otel.noop process")
    assert_child_of(send, request)
    assert_child_of(process, send)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_span_started_in_the_task_is_a_child_of_the_attempt_span(
    traced: Traced, start_worker: StartWorker, kind: str
) -> None:
    if kind == "sync":

        @traced.app.task(name="otel.inner")
        def inner() -> str:
            with traced.tracer.start_as_current_span("inside"):
                return "ok"

    else:

        @traced.app.task(name="otel.inner")
        async def inner() -> str:
            with traced.tracer.start_as_current_span("inside"):
                await asyncio.sleep(0)
                return "ok"

    start_worker(traced.app)
    assert inner.delay().wait(timeout=30) == "ok"
    assert_child_of(traced.one("inside"), traced.one("otel.inner process"))
    assert_child_of(traced.one("otel.inner process"), traced.one("otel.inner send"))


def test_a_failed_attempt_records_the_exception(traced: Traced, start_worker: StartWorker) -> None:
    @traced.app.task(name="otel.broken", max_attempts=1)
    def broken() -> None:
        raise ValueError("no such order")

    start_worker(traced.app)
    with pytest.raises(pgqueue.JobFailed):
        broken.delay().wait(timeout=30)
    process = traced.one("otel.broken process")
    assert process.status.status_code is StatusCode.ERROR
    assert process.status.description == "ValueError: no such order"
    assert process.attributes is not None
    assert process.attributes["pgqueue.job.outcome"] == "failed"
    assert process.attributes["error.type"] == "ValueError"
    [event] = process.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.message"] == "no such order"


def test_each_attempt_of_a_retried_job_is_a_span_of_its_own(
    traced: Traced, start_worker: StartWorker
) -> None:
    @traced.app.task(
        name="otel.flaky", max_attempts=3, autoretry_for=(ConnectionError,), retry_backoff=False
    )
    def flaky() -> str:
        job = pgqueue.current_job()
        assert job is not None
        if job.attempt < 3:
            raise ConnectionError(f"attempt {job.attempt}: refused")
        return "done"

    start_worker(traced.app)
    assert flaky.delay().wait(timeout=30) == "done"
    send = traced.one("otel.flaky send")
    attempts = sorted(
        traced.spans("otel.flaky process"),
        key=lambda s: s.attributes["pgqueue.job.attempt"] if s.attributes else 0,
    )
    assert len(attempts) == 3
    for span in attempts:
        assert_child_of(span, send)  # every attempt continues the enqueue's trace
    outcomes = [(s.attributes or {}).get("pgqueue.job.outcome") for s in attempts]
    assert outcomes == ["queued", "queued", "succeeded"]
    assert [s.status.status_code for s in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]


def test_retry_and_cancel_asked_by_the_task_are_outcomes_not_errors(
    traced: Traced, start_worker: StartWorker
) -> None:
    @traced.app.task(name="otel.again", bind=True, max_attempts=2)
    def again(self: pgqueue.Task[Any, Any]) -> str:
        if self.request.attempt == 1:
            self.retry(countdown=0)
        raise pgqueue.Cancel("not needed any more")

    start_worker(traced.app)
    with pytest.raises(pgqueue.JobCancelled):
        again.delay().wait(timeout=30)
    attempts = sorted(
        traced.spans("otel.again process"),
        key=lambda s: s.attributes["pgqueue.job.attempt"] if s.attributes else 0,
    )
    assert [(s.attributes or {}).get("pgqueue.job.outcome") for s in attempts] == [
        "queued",
        "cancelled",
    ]
    assert {s.status.status_code for s in attempts} == {StatusCode.UNSET}


def test_a_job_without_a_trace_context_starts_a_new_trace(
    traced: Traced, dsn: str, start_worker: StartWorker
) -> None:
    @traced.app.task(name="otel.plain")
    def plain() -> str:
        with traced.tracer.start_as_current_span("inside"):
            return "ran"

    # Enqueued by an app that is not instrumented (another service, an older deploy).
    producer = pgqueue.App(dsn)
    producer.task(name="otel.plain")(lambda: None)
    try:
        job = producer.tasks["otel.plain"].delay()
    finally:
        producer.close()
    assert job.headers == {}
    start_worker(traced.app)
    assert job.wait(timeout=30) == "ran"
    process = traced.one("otel.plain process")
    assert process.parent is None
    assert_child_of(traced.one("inside"), process)
    assert traced.spans("otel.plain send") == []


@pytest.mark.parametrize(
    "stored",
    [
        '["not", "an", "object"]',
        '"traceparent"',
        '{"traceparent": "00-garbage-garbage-01"}',
        '{"traceparent": 42, "tracestate": ["x"]}',
        '{"traceparent": "00-00000000000000000000000000000000-0000000000000000-01"}',
    ],
)
def test_hostile_headers_never_stop_the_job(
    traced: Traced, conn: psycopg.Connection[Any], start_worker: StartWorker, stored: str
) -> None:
    @traced.app.task(name="otel.sturdy")
    def sturdy() -> str:
        return "ran"

    # Written before any worker runs, as a buggy producer or a hand-made row would.
    job = sturdy.apply_async(countdown=3600)
    conn.execute(
        "UPDATE pgqueue_jobs SET headers = %s::jsonb, run_at = now() WHERE id = %s",
        (stored, job.id),
    )
    start_worker(traced.app)
    assert job.wait(timeout=30) == "ran"
    process = traced.one("otel.sturdy process")
    assert process.parent is None  # nothing readable to continue: a trace of its own
    assert (process.attributes or {}).get("pgqueue.job.outcome") == "succeeded"


def test_apply_async_in_a_transaction_traces_the_insert(
    traced: Traced, dsn: str, start_worker: StartWorker
) -> None:
    @traced.app.task(name="otel.in_tx")
    def in_tx() -> str:
        return "committed"

    with psycopg.connect(dsn) as caller, caller.transaction():
        job = in_tx.apply_async(connection=caller)
    start_worker(traced.app)
    assert job.wait(timeout=30) == "committed"
    assert_child_of(traced.one("otel.in_tx process"), traced.one("otel.in_tx send"))


def test_delay_many_is_one_send_span_and_a_span_per_job(
    traced: Traced, start_worker: StartWorker
) -> None:
    @traced.app.task(name="otel.each")
    def each(n: int) -> int:
        return n

    start_worker(traced.app, concurrency=4)
    ids = each.delay_many([(n,) for n in range(5)])
    traced.app.wait_all([traced.app.get_job(i) for i in ids], timeout=30)
    send = traced.one("otel.each send")
    assert send.attributes is not None
    assert send.attributes["messaging.batch.message_count"] == 5
    assert "messaging.message.id" not in send.attributes
    processes = traced.spans("otel.each process")
    assert sorted((s.attributes or {})["messaging.message.id"] for s in processes) == sorted(
        str(i) for i in ids
    )
    for span in processes:
        assert_child_of(span, send)


def test_the_async_twins_are_traced(traced: Traced, dsn: str, start_worker: StartWorker) -> None:
    @traced.app.task(name="otel.twin")
    async def twin(n: int) -> int:
        return n

    async def enqueue() -> list[int]:
        job = await twin.adelay(1)
        caller = await psycopg.AsyncConnection.connect(dsn)
        async with caller, caller.transaction():
            in_tx = await twin.aapply_async(args=(2,), connection=caller)
        many = await twin.adelay_many([(3,), (4,)])
        await traced.app.aclose()
        return [job.id, in_tx.id, *many]

    ids = asyncio.run(enqueue())
    start_worker(traced.app)
    traced.app.wait_all([traced.app.get_job(i) for i in ids], timeout=30)
    sends = traced.spans("otel.twin send")
    assert len(sends) == 3
    by_trace = {_ids(s)[0]: s for s in sends}
    processes = traced.spans("otel.twin process")
    assert len(processes) == 4
    for span in processes:
        assert_child_of(span, by_trace[_ids(span)[0]])


def test_headers_given_at_enqueue_are_kept_beside_the_trace_context(
    traced: Traced, start_worker: StartWorker
) -> None:
    @traced.app.task(name="otel.tagged")
    def tagged() -> dict[str, Any]:
        job = pgqueue.current_job()
        assert job is not None
        return job.headers

    start_worker(traced.app)
    headers = tagged.apply_async(headers={"tenant": "acme"}).wait(timeout=30)
    assert headers["tenant"] == "acme"
    assert "traceparent" in headers


def test_uninstrument_stops_the_spans(traced: Traced, start_worker: StartWorker) -> None:
    @traced.app.task(name="otel.quiet")
    def quiet() -> None:
        return None

    assert uninstrument(traced.app) is True
    assert uninstrument(traced.app) is False
    start_worker(traced.app)
    job = quiet.delay()
    job.wait(timeout=30)
    assert traced.spans() == []
    assert job.headers == {}


def test_a_worker_process_continues_the_trace_in_its_pool_children(
    dsn: str, tmp_path: Path, traced: Traced
) -> None:
    """A real `pgqueue worker --pool process`: the sync task runs in a child process, the
    async one in the worker; both continue the trace begun in this process."""
    spans_file = tmp_path / "spans.jsonl"
    spans_file.touch()
    sync_step = traced.app.task(name="otel.sync_step")(lambda n: n)
    async_step = traced.app.task(name="otel.async_step")(lambda n: n)
    jobs = [sync_step.delay(1), async_step.delay(2)]
    worker = WorkerProcess(
        dsn,
        tmp_path / "worker.log",
        ["--pool", "process", "--concurrency", "1", "--poll-interval", "0.5"],
        app="tests.contrib.otel_app:app",
        env={"PGQUEUE_TEST_SPANS": str(spans_file)},
    )
    try:
        worker.launch()
        worker.wait_ready()
        assert [job.wait(timeout=60) for job in jobs] == [2, 4]
    finally:
        worker.cleanup()
        print(worker.log())

    def written() -> list[dict[str, Any]]:
        return [json.loads(line) for line in spans_file.read_text().splitlines() if line]

    records = wait_until(lambda: len(written()) >= 4 and written(), what="4 spans written")
    by_name = {r["name"]: r for r in records}
    for step, job in zip(("sync_step", "async_step"), jobs, strict=True):
        send = traced.one(f"otel.{step} send")
        process, inside = by_name[f"otel.{step} process"], by_name[f"inside {step}"]
        assert (process["trace_id"], process["parent_id"]) == _ids(send)
        assert process["kind"] == "CONSUMER"
        assert process["attributes"]["messaging.message.id"] == str(job.id)
        assert inside["trace_id"] == process["trace_id"]
        assert inside["parent_id"] == process["span_id"]
    # The sync task ran in a child of the pool, the async one in the worker itself.
    assert by_name["otel.sync_step process"]["pid"] != by_name["otel.async_step process"]["pid"]


def test_drain_traces_jobs_as_a_worker_does(traced: Traced) -> None:
    @traced.app.task(name="otel.drained")
    def drained() -> str:
        with traced.tracer.start_as_current_span("inside"):
            return "ok"

    @traced.app.task(name="otel.adrained")
    async def adrained() -> str:
        return "ok"

    drained.delay()
    adrained.delay()
    with traced.tracer.start_as_current_span("test"):  # not the jobs' parent: their send is
        assert [ran.status for ran in drain(traced.app)] == ["succeeded"] * 2
    for name in ("otel.drained", "otel.adrained"):
        assert_child_of(traced.one(f"{name} process"), traced.one(f"{name} send"))
    assert_child_of(traced.one("inside"), traced.one("otel.drained process"))


def test_an_async_attempt_past_its_timeout_is_interrupted(
    traced: Traced, start_worker: StartWorker
) -> None:
    @traced.app.task(name="otel.slow", timeout=0.2, max_attempts=1)
    async def slow() -> None:
        await asyncio.Event().wait()  # never set: only the timeout ends it

    start_worker(traced.app)
    with pytest.raises(pgqueue.JobFailed, match="timeout"):
        slow.delay().wait(timeout=30)
    process = traced.one("otel.slow process")
    assert (process.attributes or {}).get("pgqueue.job.outcome") == "interrupted"
    assert process.status.status_code is StatusCode.ERROR
    assert_child_of(process, traced.one("otel.slow send"))
