"""Task definitions for the peers pgqueue's benchmark compares against (see ../peers.py).

Each peer's worker process imports one module of this package. Every module defines the same
two tasks: `noop` (does nothing: the drain measures the queue, not the task) and `probe(sent)`
(records its pickup latency). `record_latency` is shared so that the measuring cost, one
write(2) to a local file and no network round trip, is the same for every peer.
"""

from __future__ import annotations

import os
import time

_fd: int | None = None


def _samples_fd() -> int:
    """The samples file ($PEER_SAMPLES), opened once per process in append mode, so that
    several processes (Celery's prefork children) can write whole lines without a lock."""
    global _fd
    if _fd is None:
        _fd = os.open(os.environ["PEER_SAMPLES"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    return _fd


def record_latency(sent: float) -> None:
    """Append this task's pickup latency (seconds since the producer's `time.time()` just
    before it enqueued the job), one line per job."""
    latency = time.time() - sent
    os.write(_samples_fd(), b"%.6f\n" % latency)


def record_span(started: float) -> None:
    """Append "start finish" (epoch seconds) for a peer that keeps no record of when its
    jobs ran (Celery without a result backend), so a drain is timed the same way as on the
    peers whose database keeps those times."""
    os.write(_samples_fd(), b"%.6f %.6f\n" % (started, time.time()))
