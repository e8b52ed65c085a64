"""Claiming: wait for a NOTIFY, a freed slot, a due timer or the poll tick; then claim up to the
number of free slots in one `SELECT ... FOR UPDATE SKIP LOCKED` statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from pgqueue import queries
from pgqueue.outcome import ClaimedJob


@dataclass(frozen=True)
class Claim:
    """What one claim statement took: jobs to run, and jobs it ended instead (expired, or
    cancelled while waiting for a retry): `taken` counts both, against the limit."""

    jobs: list[ClaimedJob]
    ended: list[tuple[int, str]]

    @property
    def taken(self) -> int:
        return len(self.jobs) + len(self.ended)


async def claim_jobs(
    conn: psycopg.AsyncConnection[Any], queues: Sequence[str], limit: int, worker_id: int
) -> Claim:
    """Claim up to `limit` due jobs for `worker_id`; each claim bumps the attempt (its token)."""
    async with conn.cursor() as cur:
        await cur.execute(
            queries.CLAIM_JOBS, {"queues": list(queues), "limit": limit, "worker_id": worker_id}
        )
        rows = await cur.fetchall()
    # The statement returns rows in no particular order; start the most urgent first.
    rows.sort(key=lambda r: (-r[5], r[0]))
    jobs = []
    ended = []
    for id_, queue, task_name, args, kwargs, priority, attempts, max_attempts, dead, _ in rows:
        if dead:
            ended.append((id_, task_name))
        else:
            jobs.append(
                ClaimedJob(id_, queue, task_name, args, kwargs, priority, attempts, max_attempts)
            )
    return Claim(jobs, ended)


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
