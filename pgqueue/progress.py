"""Job progress: what a running task publishes about itself, and how it reaches the job's row.

A task calls `current_job().set_progress(value)` as often as it likes; the value is checked
there (JSON, at most MAX_PROGRESS_BYTES) and handed to a sink, which keeps only the latest
value of each job and writes it (WRITE_PROGRESS, under the claim's lease) at most every
`interval` seconds: a thousand calls cost a few writes. The last value is always written
before the job's outcome, so a finished job keeps the last progress of its last attempt.

Sinks: `ProgressWriter` in a worker (an asyncio loop of its own, fed from the task threads and
the event loop), `SyncProgressWriter` for `pgqueue.testing.drain()` (written by the call that
publishes, no thread), and in a `--pool process` child a relay that sends the values to the
worker's writer (process_pool.py). Waiting for progress is `Job.wait_progress()`
(job.py, app.py), woken by the NOTIFY that WRITE_PROGRESS sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

import psycopg

from pgqueue import _json, queries
from pgqueue.errors import ProgressTooLarge

if TYPE_CHECKING:
    from pgqueue._connection import ConnectionLane, ReconnectingConnection

logger = logging.getLogger("pgqueue.worker")

# Progress is for a UI to follow (a count, a stage, a short message), not for results: a larger
# value is refused where it is published.
MAX_PROGRESS_BYTES = 8192
# How often a worker writes each job's latest progress, at most.
DEFAULT_PROGRESS_INTERVAL = 0.25
# While the database refuses progress writes, they are tried again at most this often.
MAX_RETRY_DELAY = 5.0


def encode_progress(value: Any) -> str:
    """`value` as the JSON text to store: TypeError if it is not JSON (saying which part),
    ProgressTooLarge if it is over MAX_PROGRESS_BYTES."""
    text = _json.dumps(value, "the job's progress", "progress")
    if len(text) > MAX_PROGRESS_BYTES // 4 and len(text.encode()) > MAX_PROGRESS_BYTES:
        raise ProgressTooLarge(
            f"the job's progress is {len(text.encode())} bytes of JSON, over the "
            f"{MAX_PROGRESS_BYTES} allowed: publish a small value (a count, a stage, a short "
            "message) and store bulky data elsewhere"
        )
    return text


class ProgressSink(Protocol):
    """Where a job's context sends the progress its task publishes."""

    def publish(self, job_id: int, lease: int, value_json: str) -> None:
        """Keep `value_json` as the job's latest progress, to be written soon (any thread)."""

    def take(self, job_id: int) -> tuple[int, str] | None:
        """The job's latest unwritten progress (lease, JSON), no longer kept: a transactional
        task writes it in its own transaction, before its outcome."""


def progress_document(pending: dict[int, tuple[int, str]]) -> str:
    """WRITE_PROGRESS's parameter: one JSON array of {id, lease, value (JSON text)}."""
    return json.dumps(
        [
            {"id": job_id, "lease": lease, "value": value}
            for job_id, (lease, value) in pending.items()
        ]
    )


def write_progress_sync(
    conn: psycopg.Connection[Any], pending: dict[int, tuple[int, str]]
) -> set[int]:
    """Write these jobs' progress on `conn` (in its transaction, if one is open); the ids
    written (still running under the same lease)."""
    rows = conn.execute(queries.WRITE_PROGRESS, {"progress": progress_document(pending)})
    return {row[0] for row in rows.fetchall()}


class ProgressWriter:
    """A worker's sink: the latest progress of each job, written in one statement for all the
    jobs that have some, at most every `interval` seconds. `run()` is a task of the worker's
    event loop; `publish` may be called from any thread."""

    def __init__(
        self,
        connection: ReconnectingConnection | ConnectionLane,
        loop: asyncio.AbstractEventLoop,
        interval: float = DEFAULT_PROGRESS_INTERVAL,
    ) -> None:
        self._connection = connection
        self._loop = loop
        self._interval = interval
        self._pending: dict[int, tuple[int, str]] = {}
        self._in_flight: frozenset[int] = frozenset()  # the jobs of the write under way
        self._lock = threading.Lock()
        self._wake = asyncio.Event()
        # Held while values are written: who must see a job's value written waits for it.
        self._writing = asyncio.Lock()
        self._closed = False
        self._retry_delay = 0.0  # after a failed write: wait this long before the next
        self.writes = 0  # statements run, for tests and the curious

    def publish(self, job_id: int, lease: int, value_json: str) -> None:
        with self._lock:
            first = not self._pending
            self._pending[job_id] = (lease, value_json)
        if first:  # the writer is woken once per write, however many values come meanwhile
            # RuntimeError: the worker has stopped (its loop is closed), and with it the claim.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._wake.set)

    def take(self, job_id: int) -> tuple[int, str] | None:
        with self._lock:
            return self._pending.pop(job_id, None)

    async def run(self) -> None:
        """Write what is pending, then wait `interval` before the next write; until closed."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._write_pending()
            if self._closed:
                return
            # The coalescing window; longer and longer while the database refuses the writes.
            await asyncio.sleep(max(self._interval, self._retry_delay))

    def unwritten(self, job_id: int) -> bool:
        """Whether the job has progress pending or being written (see `flush`)."""
        return job_id in self._pending or job_id in self._in_flight

    async def flush(self, job_id: int) -> None:
        """Write the job's latest progress now, if some is pending, and wait for any write
        of it under way: before its outcome is written, which moves the row."""
        if not self.unwritten(job_id):
            return
        async with self._writing:
            pending = self.take(job_id)
            if pending is not None:
                await self._write({job_id: pending}, keep_on_failure=False)

    async def close(self, runner: asyncio.Task[None] | None = None) -> None:
        """Stop `runner` (the task running `run()`) between two writes, never during one,
        write what is pending, and close the connection."""
        self._closed = True
        async with self._writing:
            if runner is not None:
                runner.cancel()
        await self._write_pending()
        await self._connection.close()

    async def _write_pending(self) -> None:
        async with self._writing:
            with self._lock:
                pending, self._pending = self._pending, {}
            if pending:
                self._in_flight = frozenset(pending)
                try:
                    await self._write(pending, keep_on_failure=not self._closed)
                finally:
                    self._in_flight = frozenset()

    async def _write(self, pending: dict[int, tuple[int, str]], keep_on_failure: bool) -> None:
        try:
            async with self._connection.use() as conn:
                cur = await conn.execute(
                    queries.WRITE_PROGRESS, {"progress": progress_document(pending)}
                )
                written = {row[0] for row in await cur.fetchall()}
        except Exception as exc:
            # Progress is help for whoever watches: never worth holding up a job. The values
            # are tried again at the next write, unless newer ones came meanwhile.
            self._retry_delay = min(max(self._retry_delay * 2, 0.5), MAX_RETRY_DELAY)
            logger.warning(
                "could not write the progress of %d job(s)%s: %s",
                len(pending),
                f", trying again in {self._retry_delay:g}s" if keep_on_failure else "",
                " ".join(str(exc).split()) or type(exc).__name__,
            )
            await self._connection.reset()
            if keep_on_failure:
                with self._lock:
                    for job_id, value in pending.items():
                        self._pending.setdefault(job_id, value)
                self._wake.set()
            return
        self.writes += 1
        self._retry_delay = 0.0
        if len(written) < len(pending) and logger.isEnabledFor(logging.DEBUG):
            for job_id in sorted(set(pending) - written):
                logger.debug("job %d: progress dropped, its claim has ended", job_id)


class SyncProgressWriter:
    """`drain()`'s sink: written on `conn` by the call that publishes it, at most every
    `interval` seconds per job (a value kept back is written by `flush`, before the outcome)."""

    def __init__(
        self, conn: psycopg.Connection[Any], interval: float = DEFAULT_PROGRESS_INTERVAL
    ) -> None:
        self._conn = conn
        self._interval = interval
        self._pending: dict[int, tuple[int, str]] = {}
        self._last_write: dict[int, float] = {}
        self._lock = threading.Lock()

    def publish(self, job_id: int, lease: int, value_json: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last_write.get(job_id, float("-inf")) < self._interval:
                self._pending[job_id] = (lease, value_json)
                return
            self._pending.pop(job_id, None)
            self._last_write[job_id] = now
            write_progress_sync(self._conn, {job_id: (lease, value_json)})

    def take(self, job_id: int) -> tuple[int, str] | None:
        with self._lock:
            return self._pending.pop(job_id, None)

    def flush(self, job_id: int) -> None:
        """Write the job's value kept back, if any, and forget the job."""
        with self._lock:
            pending = self._pending.pop(job_id, None)
            self._last_write.pop(job_id, None)
            if pending is not None:
                write_progress_sync(self._conn, {job_id: pending})
