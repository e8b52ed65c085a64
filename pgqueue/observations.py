"""What a worker sees of its own work: each attempt's queue, task, outcome, pickup wait and
duration; its claims, the rescues it performs and the connections it loses.

Two readers: the worker's Prometheus endpoint (`metrics.py`) reads the running totals at scrape
time, and the worker's maintenance loop writes what came in since its last write to
`pgqueue_stats` (`flush`), summed per (queue, outcome) into the rollup's histograms (see
`rollup.py`). Recording costs a few dict and list increments under an uncontended lock (the
event loop records, the notifier's thread records its reconnects, the metrics thread reads), and
never raises into the worker: a bookkeeping error is logged once and the observation dropped.
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from pgqueue import queries, rollup

logger = logging.getLogger("pgqueue.worker")

# The outcome of an attempt by its Outcome's status: a failure put back for another attempt
# is `retried`.
OUTCOME_BY_STATUS = {
    "succeeded": "succeeded",
    "failed": "failed",
    "queued": "retried",
    "cancelled": "cancelled",
}
# Upper bounds of the claim batch size histogram (jobs per claim statement, 0 for a claim that
# found nothing).
CLAIM_SIZE_BOUNDS: tuple[float, ...] = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
# Counts a failing database keeps from being written are kept this long (then dropped, with a
# warning): written after a long outage, they would all land in one bucket and draw a spike.
KEEP_UNWRITTEN = 300.0


@dataclass(slots=True)
class Histogram:
    """Counts per bucket (bucket i: values <= bounds[i] and above bounds[i - 1]; the last
    bucket holds the rest) and the sum of the values."""

    counts: list[int]
    total: float = 0.0

    @classmethod
    def over(cls, bounds: tuple[float, ...]) -> Histogram:
        return cls([0] * (len(bounds) + 1))

    def observe(self, bounds: tuple[float, ...], value: float) -> None:
        self.counts[bisect.bisect_left(bounds, value)] += 1
        self.total += value

    def add(self, other: Histogram) -> None:
        for index, count in enumerate(other.counts):
            self.counts[index] += count
        self.total += other.total

    def copy(self) -> Histogram:
        return Histogram(list(self.counts), self.total)


@dataclass(slots=True)
class Rollup:
    """One pending row of pgqueue_stats: attempts of one queue with one outcome."""

    count: int = 0
    wait: Histogram = field(default_factory=lambda: Histogram.over(rollup.BOUNDS))
    duration: Histogram = field(default_factory=lambda: Histogram.over(rollup.BOUNDS))

    def add(self, other: Rollup) -> None:
        self.count += other.count
        self.wait.add(other.wait)
        self.duration.add(other.duration)


@dataclass
class Snapshot:
    """The running totals at one moment, copied for a reader on another thread."""

    finished: dict[tuple[str, str, str], int]
    duration: dict[tuple[str, str], Histogram]
    wait: dict[str, Histogram]
    running: dict[str, int]
    retries: dict[tuple[str, str], int]
    claims: int
    claim_sizes: Histogram
    rescued: int
    connection_losses: dict[str, int]


class Observations:
    """A worker's running totals, and the rollup rows it has yet to write."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._finished: dict[tuple[str, str, str], int] = {}
        self._duration: dict[tuple[str, str], Histogram] = {}
        self._wait: dict[str, Histogram] = {}
        self._running: dict[str, int] = {}
        self._retries: dict[tuple[str, str], int] = {}
        self._claims = 0
        self._claim_sizes = Histogram.over(CLAIM_SIZE_BOUNDS)
        self._rescued = 0
        self._connection_losses: dict[str, int] = {}
        self._pending: dict[tuple[str, str], Rollup] = {}
        self._pending_since: float | None = None  # time.monotonic() of the oldest unwritten
        self._complained = False

    # -- recording (hot path) ---------------------------------------------------------------

    def attempt_ended(
        self, queue: str, task: str, status: str, wait: float, duration: float
    ) -> None:
        """One attempt ended with an Outcome of `status` after `duration` seconds; the job had
        been due for `wait` seconds when it was claimed. Other statuses (a lost lease) are not
        attempts that end in a row of their own, and are not counted."""
        try:
            outcome = OUTCOME_BY_STATUS.get(status)
            if outcome is None:
                return
            bounds = rollup.BOUNDS
            wait_at = bisect.bisect_left(bounds, wait)
            duration_at = bisect.bisect_left(bounds, duration)
            with self._lock:
                key = (queue, task, outcome)
                self._finished[key] = self._finished.get(key, 0) + 1
                histogram = self._duration.get((queue, task))
                if histogram is None:
                    histogram = self._duration[queue, task] = Histogram.over(bounds)
                histogram.counts[duration_at] += 1
                histogram.total += duration
                histogram = self._wait.get(queue)
                if histogram is None:
                    histogram = self._wait[queue] = Histogram.over(bounds)
                histogram.counts[wait_at] += 1
                histogram.total += wait
                if outcome == "retried":
                    self._retries[queue, task] = self._retries.get((queue, task), 0) + 1
                row = self._pending.get((queue, outcome))
                if row is None:
                    row = self._pending[queue, outcome] = Rollup()
                    if self._pending_since is None:
                        self._pending_since = time.monotonic()
                row.count += 1
                row.wait.counts[wait_at] += 1
                row.wait.total += wait
                row.duration.counts[duration_at] += 1
                row.duration.total += duration
        except Exception:
            self._complain()

    def running_changed(self, queue: str, delta: int) -> None:
        """An attempt of `queue` started (+1) or ended (-1) on this worker."""
        try:
            with self._lock:
                self._running[queue] = self._running.get(queue, 0) + delta
        except Exception:
            self._complain()

    def claimed(self, taken: int) -> None:
        """A claim statement took `taken` jobs (0: it found none)."""
        try:
            with self._lock:
                self._claims += 1
                self._claim_sizes.observe(CLAIM_SIZE_BOUNDS, taken)
        except Exception:
            self._complain()

    def rescued(self, jobs: int) -> None:
        """This worker's maintenance took `jobs` jobs back from lost workers."""
        if not jobs:
            return
        try:
            with self._lock:
                self._rescued += jobs
        except Exception:
            self._complain()

    def connection_lost(self, connection: str) -> None:
        """A working connection broke and will be made again: `notifier` (listening and
        presence) or `shared` (claims, outcomes, progress and maintenance)."""
        try:
            with self._lock:
                self._connection_losses[connection] = self._connection_losses.get(connection, 0) + 1
        except Exception:
            self._complain()

    def _complain(self) -> None:
        if not self._complained:
            self._complained = True
            logger.exception("recording a worker metric failed; metrics may be incomplete")

    # -- reading ----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """A copy of the running totals (for the metrics thread)."""
        with self._lock:
            return Snapshot(
                finished=dict(self._finished),
                duration={k: h.copy() for k, h in self._duration.items()},
                wait={k: h.copy() for k, h in self._wait.items()},
                running=dict(self._running),
                retries=dict(self._retries),
                claims=self._claims,
                claim_sizes=self._claim_sizes.copy(),
                rescued=self._rescued,
                connection_losses=dict(self._connection_losses),
            )

    @property
    def unwritten(self) -> int:
        """Attempts counted but not yet written to pgqueue_stats."""
        with self._lock:
            return sum(row.count for row in self._pending.values())

    # -- writing the rollup -----------------------------------------------------------------

    def _take_pending(self) -> tuple[dict[tuple[str, str], Rollup], float | None]:
        with self._lock:
            pending, since = self._pending, self._pending_since
            self._pending, self._pending_since = {}, None
            return pending, since

    def _give_back(self, pending: dict[tuple[str, str], Rollup], since: float | None) -> None:
        """Put counts whose write failed back in front of those recorded meanwhile; or drop
        them once they are older than KEEP_UNWRITTEN."""
        if since is not None and time.monotonic() - since > KEEP_UNWRITTEN:
            logger.warning(
                "dropping %d attempt(s) from pgqueue_stats: not written for %.0fs",
                sum(row.count for row in pending.values()),
                time.monotonic() - since,
            )
            return
        with self._lock:
            for key, row in pending.items():
                current = self._pending.get(key)
                if current is not None:
                    row.add(current)
                self._pending[key] = row
            if since is not None and (self._pending_since is None or since < self._pending_since):
                self._pending_since = since

    async def flush(self, conn: psycopg.AsyncConnection[Any]) -> int:
        """Write what came in since the last write to pgqueue_stats, in the bucket of the
        database's clock; returns the attempts written. On an error the counts are kept for the
        next flush (within KEEP_UNWRITTEN) and the error raised."""
        pending, since = self._take_pending()
        if not pending:
            return 0
        try:
            await conn.execute(queries.FLUSH_STATS, {"rows": stats_document(pending)})
        except BaseException:
            # Sent or not, the statement did not commit as far as this process can tell: a
            # cancelled flush at exit is the one case where it may have (and counts twice).
            self._give_back(pending, since)
            raise
        return sum(row.count for row in pending.values())


def stats_document(pending: dict[tuple[str, str], Rollup]) -> str:
    """FLUSH_STATS's parameter: one JSON object per row."""
    return json.dumps(
        [
            {
                "queue": queue,
                "outcome": outcome,
                "count": row.count,
                "wait_sum": row.wait.total,
                "wait_buckets": row.wait.counts,
                "duration_sum": row.duration.total,
                "duration_buckets": row.duration.counts,
            }
            for (queue, outcome), row in pending.items()
        ]
    )
