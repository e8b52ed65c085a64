"""Signals: the points of a worker's life that other code hooks into (error trackers, metrics,
audit logs), with the names Celery users know.

>>> from pgqueue import signals
>>> @signals.task_failure.connect
... def report(job, error, **kwargs):
...     sentry_sdk.capture_message(f"{job.task} failed: {error['message']}")

Receivers are plain (sync) functions called with keyword arguments only; accept `**kwargs`,
so that arguments added later do not break them. They run in the worker process, on the
thread of its event loop: before an attempt starts and once its outcome is known (with
`--pool process` too: the attempt runs in a child, its signals in the worker). Keep them
short: while one runs, the worker claims and completes nothing. A receiver that raises is
logged (once per receiver and exception type) and changes nothing: the job's outcome and the
worker stay as they were.

What each signal is sent with (every task signal has `sender`, the Task or None when this
worker does not know the task; `job`, the attempt's `pgqueue.JobContext`; `task_id`):

- `task_prerun`: before the attempt runs.
- `task_postrun`: after it, whatever happened: `status` ("succeeded", "failed", "queued" for
  a retry, "cancelled", "lost" for an attempt whose job was rescued meanwhile), `duration`.
- `task_success`: `result` (as stored, through JSON), `duration`.
- `task_failure`: the job ended FAILED: `error` (a dict: `type`, `message`, `traceback`),
  `duration`.
- `task_retry`: the attempt failed and the job goes back to the queue: `error`, `countdown`
  (seconds) or `eta` (a datetime).
- `task_rescued`: this worker's maintenance took a job back from a lost worker: `sender`
  None, no `job`; `task_id`, `task_name`, `attempts`, `status` ("queued", or "failed" when
  no attempts remain).
- `worker_ready`, `worker_shutdown`: `sender` is the Worker; shutdown is sent once claiming
  stopped and running jobs ended, before the worker's connections close.

Only `pgqueue worker` (and `Worker`) sends them; a plain call, eager mode and
`pgqueue.testing.drain()` do not.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pgqueue import _json
from pgqueue.context import JobContext
from pgqueue.outcome import Failed, LeaseLost, Outcome, RetryLater, Succeeded

if TYPE_CHECKING:
    from pgqueue.app import App
    from pgqueue.outcome import ClaimedJob

logger = logging.getLogger("pgqueue.signals")

Receiver = Callable[..., Any]

# The names of the signals that have a receiver: a worker sends nothing, and builds no
# arguments, while this is empty (one truth test per job).
live: set[str] = set()


class Signal:
    """One hook point: `connect(fn)` (usable as a decorator), `disconnect(fn)`, `send(**kw)`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.receivers: tuple[Receiver, ...] = ()
        self._reported: set[tuple[int, type[BaseException]]] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<pgqueue signal {self.name}: {len(self.receivers)} receiver(s)>"

    def connect(self, receiver: Receiver) -> Receiver:
        """Call `receiver(**kwargs)` each time this signal is sent; returns it unchanged."""
        if not callable(receiver):
            raise TypeError(f"a signal receiver must be callable, got {receiver!r}")
        with self._lock:
            if receiver not in self.receivers:
                self.receivers = (*self.receivers, receiver)
            live.add(self.name)
        return receiver

    def disconnect(self, receiver: Receiver) -> bool:
        """Stop calling `receiver`; False if it was not connected."""
        with self._lock:
            kept = tuple(r for r in self.receivers if r != receiver)
            removed = len(kept) != len(self.receivers)
            self.receivers = kept
            if not kept:
                live.discard(self.name)
        return removed

    def send(self, **kwargs: Any) -> None:
        """Call every receiver; what one raises is logged, never raised."""
        for receiver in self.receivers:  # a tuple: connecting meanwhile changes nothing here
            try:
                receiver(signal=self, **kwargs)
            except BaseException as exc:  # a receiver must not cost a job or the worker
                self._report(receiver, exc)

    def _report(self, receiver: Receiver, exc: BaseException) -> None:
        key = (id(receiver), type(exc))
        if key in self._reported:
            return
        self._reported.add(key)
        name = getattr(receiver, "__qualname__", repr(receiver))
        logger.error(
            "signal %s: receiver %s raised %s (logged once; the job and the worker go on)",
            self.name,
            name,
            type(exc).__name__,
            exc_info=exc,
        )


task_prerun = Signal("task_prerun")
task_postrun = Signal("task_postrun")
task_success = Signal("task_success")
task_failure = Signal("task_failure")
task_retry = Signal("task_retry")
task_rescued = Signal("task_rescued")
worker_ready = Signal("worker_ready")
worker_shutdown = Signal("worker_shutdown")


# -- what the worker calls (only when `live` is not empty) ------------------------------------


def attempt_started(app: App, job: ClaimedJob) -> None:
    if task_prerun.receivers:
        task = app.tasks.get(job.task_name)
        task_prerun.send(sender=task, job=JobContext(job), task_id=job.id)


def attempt_ended(app: App, outcome: Outcome | LeaseLost, duration: float) -> None:
    """Send the signals for an attempt's outcome: its own, then task_postrun."""
    job = outcome.job
    task = app.tasks.get(job.task_name)
    context = JobContext(job)
    common = {"sender": task, "job": context, "task_id": job.id}
    if isinstance(outcome, Succeeded) and task_success.receivers:
        try:
            result = _json.loads(outcome.result_json)
        except Exception:  # never a reason to skip the other receivers
            result = None
        task_success.send(result=result, duration=duration, **common)
    elif isinstance(outcome, Failed) and task_failure.receivers:
        task_failure.send(error=outcome.error, duration=duration, **common)
    elif isinstance(outcome, RetryLater) and task_retry.receivers:
        countdown = None if outcome.eta is not None else outcome.delay
        task_retry.send(error=outcome.error, countdown=countdown, eta=outcome.eta, **common)
    if task_postrun.receivers:
        task_postrun.send(status=outcome.status, duration=duration, **common)


def rescued(rows: list[dict[str, Any]]) -> None:
    if task_rescued.receivers:
        for row in rows:
            task_rescued.send(
                sender=None,
                task_id=row["id"],
                task_name=row["task_name"],
                attempts=row["attempts"],
                status=row["status"],
            )
