"""OpenTelemetry tracing: a span for each enqueue and one for each attempt, in one trace.

`instrument(app)` installs an enqueue hook and an attempt wrapper (see `pgqueue.hooks`):

- Enqueueing (`delay`, `apply_async`, `delay_many` and their async twins) makes a PRODUCER
  span, `"{task} send"`, current while the jobs are written, and puts its context in the
  jobs' headers with the global propagator (W3C `traceparent` unless configured otherwise).
- Each attempt makes a CONSUMER span, `"{task} process"`, whose parent is the context the job
  carries; it is current while the task function runs, so the spans the task starts (HTTP
  calls, queries) are its children. A job without a trace context (enqueued by an app that is
  not instrumented, by a periodic schedule) starts a trace of its own.

Attributes follow OpenTelemetry's messaging conventions (`messaging.system` "pgqueue",
`messaging.destination.name` the queue, `messaging.message.id` the job id, ...) plus
pgqueue's own (`pgqueue.task.name`, `pgqueue.job.attempt`, `pgqueue.job.outcome`); see
docs/opentelemetry.md. Installed by `pgqueue[opentelemetry]`, which needs only the API: the
application configures the SDK and its exporter as usual.

>>> from pgqueue.contrib.opentelemetry import instrument
>>> instrument(app)
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode

from pgqueue._version import __version__
from pgqueue.errors import Cancel, Retry

if TYPE_CHECKING:
    from pgqueue.app import App
    from pgqueue.hooks import Attempt, Enqueueing

logger = logging.getLogger("pgqueue.contrib.opentelemetry")

SYSTEM = "pgqueue"

_installed: weakref.WeakKeyDictionary[App, tuple[_SendSpans, _ProcessSpans]] = (
    weakref.WeakKeyDictionary()
)


def instrument(app: App, tracer_provider: trace.TracerProvider | None = None) -> None:
    """Trace `app`'s enqueues and attempts, with spans from `tracer_provider` (else the global
    one, as set by `opentelemetry.trace.set_tracer_provider` or the auto-instrumentation
    agent, when they are made). Instrumenting again replaces the earlier provider.

    Call it where the app is defined, so that every process that loads the app (the web
    process, `pgqueue worker`, the children of `--pool process`) traces it.
    """
    tracer = trace.get_tracer(__name__, __version__, tracer_provider=tracer_provider)
    uninstrument(app)
    send, process = _SendSpans(tracer), _ProcessSpans(tracer)
    app.add_enqueue_hook(send)
    app.add_attempt_wrapper(process)
    _installed[app] = (send, process)


def uninstrument(app: App) -> bool:
    """Stop tracing `app`; False if it was not instrumented."""
    hooks = _installed.pop(app, None)
    if hooks is None:
        return False
    send, process = hooks
    app.remove_enqueue_hook(send)
    app.remove_attempt_wrapper(process)
    return True


def _messaging(operation: str, queue: str, task_name: str) -> dict[str, Any]:
    return {
        "messaging.system": SYSTEM,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": queue,
        "pgqueue.task.name": task_name,
    }


class _SendSpans:
    """The enqueue hook: one PRODUCER span per enqueue call."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    def __call__(self, enqueueing: Enqueueing) -> _SendSpan:
        return _SendSpan(self.tracer, enqueueing)


class _SendSpan:
    def __init__(self, tracer: trace.Tracer, enqueueing: Enqueueing) -> None:
        self.tracer = tracer
        self.enqueueing = enqueueing

    def __enter__(self) -> None:
        e = self.enqueueing
        attributes = _messaging("send", e.queue, e.task_name)
        if e.count != 1:
            attributes["messaging.batch.message_count"] = e.count
        self.span = self.tracer.start_span(
            f"{e.task_name} send", kind=SpanKind.PRODUCER, attributes=attributes
        )
        context = trace.set_span_in_context(self.span)
        # The jobs carry this span's context: their attempts' spans become its children.
        propagate.inject(e.headers, context=context)
        self.token = otel_context.attach(context)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            ids = self.enqueueing.job_ids
            if len(ids) == 1:
                self.span.set_attribute("messaging.message.id", str(ids[0]))
            if exc is not None:
                _record_error(self.span, exc)
        finally:
            otel_context.detach(self.token)
            self.span.end()


class _ProcessSpans:
    """The attempt wrapper: one CONSUMER span per attempt, a child of the enqueue's span."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    def __call__(self, attempt: Attempt) -> _ProcessSpan:
        return _ProcessSpan(self.tracer, attempt)


class _ProcessSpan:
    def __init__(self, tracer: trace.Tracer, attempt: Attempt) -> None:
        self.tracer = tracer
        self.attempt = attempt

    def __enter__(self) -> None:
        job = self.attempt.job
        attributes = _messaging("process", job.queue, job.task_name)
        attributes["messaging.message.id"] = str(job.id)
        attributes["pgqueue.job.attempt"] = job.attempt
        attributes["pgqueue.job.max_attempts"] = job.max_attempts
        self.span = self.tracer.start_span(
            f"{job.task_name} process",
            context=_extracted(job.id, job.headers),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )
        self.token = otel_context.attach(trace.set_span_in_context(self.span))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            outcome = self.attempt.outcome
            if outcome is not None:
                self.span.set_attribute("pgqueue.job.outcome", outcome)
            # Retry and Cancel are how a task asks for another attempt or for its end: the
            # outcome says so; they are not errors of the attempt.
            if exc is not None and not isinstance(exc, (Retry, Cancel)):
                _record_error(self.span, exc)
        finally:
            otel_context.detach(self.token)
            self.span.end()


def _record_error(span: trace.Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_attribute("error.type", type(exc).__qualname__)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


class _StringHeaders(Getter[Mapping[str, Any]]):
    """Reads a job's headers for the propagator: only string values (headers are whatever
    was stored, and a propagator given another type raises)."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [key for key, value in carrier.items() if isinstance(value, str)]


_GETTER = _StringHeaders()


def _extracted(job_id: int, headers: Mapping[str, Any]) -> otel_context.Context:
    """The trace context the job carries. Without one, or with one the propagator cannot read
    (it ignores a garbled `traceparent`), an empty context: the attempt starts a new trace,
    whatever span is current where it runs (a test calling `pgqueue.testing.drain()`)."""
    if not headers:
        return otel_context.Context()
    try:
        return propagate.extract(headers, context=otel_context.Context(), getter=_GETTER)
    except Exception as exc:
        logger.warning("job %d: its trace context cannot be read (%s); new trace", job_id, exc)
        return otel_context.Context()
