"""Claiming: wait for a NOTIFY, a freed slot, a due timer or the poll tick; then claim up to the
number of free slots in one `SELECT ... FOR UPDATE SKIP LOCKED` statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from pgqueue import _json, queries
from pgqueue.outcome import ClaimedJob

# Where a claim stopped in a queue: the (priority, run_at, id) of the last job it took.
Position = tuple[int, datetime, int]


@dataclass(frozen=True)
class Claim:
    """What one claim statement took: jobs to run, and jobs it ended instead (expired, or
    cancelled while waiting for a retry): `taken` counts both, against the limit."""

    jobs: list[ClaimedJob]
    ended: list[tuple[int, str]]
    # Per queue, the (priority, run_at, id) of the last job taken, in the claim's order.
    last: dict[str, Position]

    @property
    def taken(self) -> int:
        return len(self.jobs) + len(self.ended)


def claim_params(
    queues: Sequence[str],
    limit: int,
    worker_id: int,
    after: Mapping[str, Position] | None = None,
) -> dict[str, Any]:
    """CLAIM_JOBS's parameters: the queues, each with its position or NULL (from the start)."""
    positions = [(after or {}).get(queue) for queue in queues]
    return {
        "queues": list(queues),
        "after_priority": [p[0] if p else None for p in positions],
        "after_run_at": [p[1] if p else None for p in positions],
        "after_id": [p[2] if p else None for p in positions],
        "limit": limit,
        "worker_id": worker_id,
    }


async def claim_jobs(
    conn: psycopg.AsyncConnection[Any],
    queues: Sequence[str],
    limit: int,
    worker_id: int,
    after: Mapping[str, Position] | None = None,
) -> Claim:
    """Claim up to `limit` due jobs for `worker_id`; each claim bumps the attempt (its token).

    A queue with a position in `after` is read from there on, within the position's priority
    (see CLAIM_JOBS); the others from the start.
    """
    async with conn.cursor() as cur:
        await cur.execute(queries.CLAIM_JOBS, claim_params(queues, limit, worker_id, after))
        rows = await cur.fetchall()
    # The statement returns rows in no particular order; start the most urgent first.
    rows.sort(key=lambda r: (-r[5], r[0]))
    jobs = []
    ended = []
    last: dict[str, Position] = {}
    for row in rows:
        (
            id_,
            queue,
            task_name,
            args,
            kwargs,
            priority,
            attempts,
            max_attempts,
            run_at,
            created_at,
            dead,
            _,
        ) = row
        if dead:
            ended.append((id_, task_name))
            continue
        # Arguments come as text: decoded here, without the driver's bytes decoding.
        jobs.append(
            ClaimedJob(
                id_,
                queue,
                task_name,
                _json.loads(args),
                _json.loads(kwargs),
                priority,
                attempts,
                max_attempts,
                created_at,
            )
        )
        position = (priority, run_at, id_)
        if queue not in last or _later(position, last[queue]):
            last[queue] = position
    return Claim(jobs, ended, last)


def _later(a: Position, b: Position) -> bool:
    """Whether `a` comes after `b` in claim order (priority DESC, run_at, id)."""
    return (-a[0], a[1], a[2]) > (-b[0], b[1], b[2])


MAX_TIMERS = 10_000


class ClaimSignal:
    """Tells the claimer when to look for work.

    NOTIFY is only a hint: a lost one costs at most `poll_interval` of latency, never a job.
    Payloads name a queue, or `queue@epoch` for a job due later, which sets a timer.
    """

    def __init__(self, queues: Sequence[str], poll_interval: float) -> None:
        self.queues = frozenset(queues)
        self.poll_interval = poll_interval
        self._event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        # Due times (ms since the epoch) with a wake-up timer set: one timer each, so that a
        # retry due just after another is not left to the poll tick. Bounded: past the bound,
        # the poll tick is the fallback.
        self._timers: set[int] = set()

    def wake(self) -> None:
        self._event.set()

    def wake_threadsafe(self) -> None:
        self._loop.call_soon_threadsafe(self._event.set)

    def on_notify_threadsafe(self, payload: str) -> None:
        """Called from the notifier's thread for each enqueue notification."""
        self._loop.call_soon_threadsafe(self._on_notify, payload)

    def _on_notify(self, payload: str) -> None:
        queue, _, due = payload.partition("@")
        if queue not in self.queues:
            return
        if due:
            with contextlib.suppress(ValueError):
                when = float(due)
                key = int(when * 1000)
                if when <= time.time():
                    self._event.set()
                elif key not in self._timers and len(self._timers) < MAX_TIMERS:
                    self._timers.add(key)
                    self._loop.call_later(when - time.time(), self._timer_due, key)
                return
        self._event.set()

    def _timer_due(self, key: int) -> None:
        self._timers.discard(key)
        self._event.set()

    async def wait(self) -> None:
        """Return when it is time to claim: woken, a timer came due, or the poll tick."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._event.wait(), self.poll_interval)
        self._event.clear()
