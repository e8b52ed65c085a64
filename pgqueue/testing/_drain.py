"""drain(): run every due job in the test's own process, through the database, until none is due.

Jobs are claimed by the workers' own statement (CLAIM_JOBS, limits aside), run by the workers'
own code (`execute.run_in_this_process` for sync tasks, `Executor.run` for async ones) and their
outcomes written by the workers' own statement (COMPLETE_JOBS, guarded by the claim's lease).
So arguments and results go through JSON, a job enqueued in a transaction exists only once it
commits, retries follow the task's policy, and jobs enqueued by jobs are run in the next round.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from pgqueue import _json, queries
from pgqueue._task_threads import TaskThreads
from pgqueue.claim import Claim, claim_params, read_claim
from pgqueue.complete import write_outcomes_sync
from pgqueue.enqueue import translate_error
from pgqueue.errors import PgQueueError
from pgqueue.execute import Executor, run_in_this_process
from pgqueue.job import JobStatus
from pgqueue.outcome import ClaimedJob, LeaseLost, Outcome, RetryLater, Succeeded
from pgqueue.progress import SyncProgressWriter
from pgqueue.transactional import TransactionalConnections

if TYPE_CHECKING:
    from pgqueue.app import App

# How many due jobs one round claims at most: a round runs what is due, the next round what
# those jobs enqueued or retried.
ROUND_SIZE = 100

# The workers' claim, taking the jobs of tasks with fleet-wide limits too: drain() runs what is
# due, one round at a time in this process, so it applies no limit (a rate would only make a
# test wait).
_CLAIM_ALL_JOBS = re.sub(r"\s+AND limited IS NULL", "", queries.CLAIM_JOBS)

# The queues that hold queued jobs: drain() serves them all unless told which.
_QUEUED_QUEUES = "SELECT DISTINCT queue FROM pgqueue_jobs WHERE status = 'queued'"
# Seconds until the earliest of these retries is due (NULL: none is queued any more).
_NEXT_RETRY = """
SELECT greatest(extract(epoch FROM min(run_at) - now()), 0)::float8
FROM pgqueue_jobs WHERE status = 'queued' AND id = ANY(%(ids)s::bigint[])
"""


class DrainLimitReached(PgQueueError):
    """drain() ran `max_rounds` rounds and jobs were still due (a job that enqueues itself?)."""


@dataclass(frozen=True)
class Ran:
    """One attempt drain() ran: the job, and what the attempt came to.

    `status` is the job's status after the attempt: "succeeded", "failed", "cancelled", or
    "queued" when it will be retried (`retried` is then True). `result` is the return value as
    stored (through JSON); `error` the stored error (`type`, `message`, `traceback`).
    """

    id: int
    task_name: str
    queue: str
    args: list[Any]
    kwargs: dict[str, Any]
    attempt: int
    status: str
    result: Any = None
    error: dict[str, Any] | None = None

    @property
    def retried(self) -> bool:
        return self.status == JobStatus.QUEUED.value

    def __repr__(self) -> str:
        what = f"error={self.error.get('type')}" if self.error else f"result={self.result!r}"
        return f"<Ran job {self.id} {self.task_name} attempt {self.attempt}: {self.status} {what}>"


def _ran(job: ClaimedJob, outcome: Outcome) -> Ran:
    result = _json.loads(outcome.result_json) if isinstance(outcome, Succeeded) else None
    return Ran(
        job.id,
        job.task_name,
        job.queue,
        job.args,
        job.kwargs,
        job.attempt,
        outcome.status,
        result,
        getattr(outcome, "error", None),
    )


class _Drain:
    """What drain() and adrain() share: one autocommit connection for the claims and the
    outcomes, the attempts run so far, and the round count."""

    def __init__(
        self,
        app: App,
        queues: Sequence[str] | None,
        retry_now: bool,
        max_wait: float,
        max_rounds: int,
    ) -> None:
        if max_rounds < 1:
            raise ValueError(f"max_rounds must be at least 1, got {max_rounds!r}")
        self.app = app
        self.queues = tuple(queues) if queues is not None else None
        self.retry_now = retry_now
        self.max_wait = max_wait
        self.max_rounds = max_rounds
        self.rounds = 0
        self.ran: list[Ran] = []
        self.retried: set[int] = set()
        self.pool = TransactionalConnections(app)
        self.conn: psycopg.Connection[Any] = app.connect(autocommit=True)
        # The tasks' progress, written on the same connection as the outcomes.
        self.progress = SyncProgressWriter(self.conn)
        self._unstarted: list[ClaimedJob] = []

    def claim(self) -> list[ClaimedJob] | None:
        """The next round's jobs, or None when nothing is due (a claim that took only jobs it
        ended, expired or cancelled, gives an empty round); DrainLimitReached past the
        limit."""
        queues: Sequence[str] | None = self.queues
        if queues is None:
            queues = sorted(row[0] for row in self._rows(_QUEUED_QUEUES))
        if not queues:
            return None
        params = claim_params(queues, ROUND_SIZE, worker_id=0)
        params["worker_id"] = None  # no worker holds these jobs: worker_id stays NULL
        claim: Claim = read_claim(self._rows(_CLAIM_ALL_JOBS, params))
        for failed in claim.unreadable:
            self.finish(failed.job, failed)
        if not claim.taken:
            return None
        self.rounds += 1
        if self.rounds > self.max_rounds:
            self._unstarted = claim.jobs
            self.release_unstarted()
            raise DrainLimitReached(self._limit_message(claim.jobs))
        self._unstarted = list(claim.jobs)
        return claim.jobs

    def _limit_message(self, due: Iterable[ClaimedJob]) -> str:
        names = sorted({job.task_name for job in due})
        return (
            f"drain() ran {self.max_rounds} rounds ({len(self.ran)} attempts) and jobs are "
            f"still due ({', '.join(names)}): a task that enqueues itself, or a retry loop? "
            "Pass max_rounds= for a longer chain."
        )

    def started(self, job: ClaimedJob) -> None:
        self._unstarted.remove(job)

    def run_sync(self, job: ClaimedJob) -> Outcome | LeaseLost:
        return run_in_this_process(self.app, job, self.pool, self.progress)

    def finish(self, job: ClaimedJob, outcome: Outcome | LeaseLost) -> None:
        """Write the attempt's outcome as a worker would, and record it."""
        if isinstance(outcome, LeaseLost):  # not ours any more: nothing to write
            return
        try:
            self.progress.flush(job.id)  # before the outcome, which moves the row
        except psycopg.Error as exc:
            raise translate_error(exc, self.conn, owned=True) from exc
        if isinstance(outcome, RetryLater) and self.retry_now and not outcome.refund_attempt:
            outcome = RetryLater(job, outcome.error, delay=0.0)
        if not (isinstance(outcome, Succeeded) and outcome.committed):
            try:
                write_outcomes_sync(self.conn, [outcome])
            except psycopg.Error as exc:
                raise translate_error(exc, self.conn, owned=True) from exc
        if isinstance(outcome, RetryLater) and not outcome.refund_attempt:
            self.retried.add(job.id)  # not a job of an unknown task: it waits minutes
        self.ran.append(_ran(job, outcome))

    def retry_wait(self) -> float | None:
        """Seconds to wait for the next retry this drain wrote, if one comes due within
        `max_wait` (and `retry_now` is off); None: the drain is over."""
        if self.retry_now or not self.retried:
            return None
        [(seconds,)] = self._rows(_NEXT_RETRY, {"ids": list(self.retried)})
        if seconds is None or seconds > self.max_wait:
            return None
        return float(seconds)

    def release_unstarted(self) -> None:
        """Give back jobs claimed but never started (drain() was interrupted)."""
        if self._unstarted:
            ids = [job.id for job in self._unstarted]
            leases = [job.lease for job in self._unstarted]
            self._unstarted = []
            self._rows(queries.RELEASE_UNSTARTED, {"ids": ids, "leases": leases})

    def _rows(self, statement: str, params: dict[str, Any] | None = None) -> list[Any]:
        try:
            return self.conn.execute(statement, params).fetchall()
        except psycopg.Error as exc:  # a schema not migrated, a lost connection: one line
            raise translate_error(exc, self.conn, owned=True) from exc

    def close(self) -> None:
        try:
            self.release_unstarted()
        finally:
            self.conn.close()
            self.pool.close()


def drain(
    app: App,
    *,
    queues: Sequence[str] | None = None,
    retry_now: bool = True,
    max_wait: float = 10.0,
    max_rounds: int = 100,
) -> list[Ran]:
    """Run every due job here, in this thread, until none is due; return the attempts, in order.

    Jobs go through the database as with a worker: claimed by the workers' statement, run by
    their code, their outcomes written by their statement. Each round runs the jobs due at its
    start (up to 100, most urgent first); jobs those jobs enqueue, and retries, run in the
    next round. Jobs with a countdown or eta still in the future are not due and stay queued.

    `queues`: only these (default: every queue with queued jobs). `retry_now` (default):
    a retry runs in the next round, without its backoff; with `retry_now=False` the backoff
    is kept and drain() waits for a retry due within `max_wait` seconds (one due later stays
    queued). `max_rounds`: raise DrainLimitReached rather than run more rounds.

    Sync tasks run in this thread; async ones on an event loop of drain()'s own (from async
    code, use `adrain()`). A task's `timeout` is applied to async tasks only.

    >>> send_welcome.delay(42)
    >>> [ran.status for ran in drain(app)]
    ['succeeded']
    """
    state = _Drain(app, queues, retry_now, max_wait, max_rounds)
    loop: asyncio.AbstractEventLoop | None = None
    executor: Executor | None = None
    try:
        while True:
            jobs = state.claim()
            if jobs is None:
                wait = state.retry_wait()
                if wait is None:
                    return state.ran
                time.sleep(wait)  # until a known due time, not polling a condition
                continue
            for job in jobs:
                state.started(job)
                task = app.tasks.get(job.task_name)
                if task is not None and task.is_async:
                    if loop is None:
                        loop = asyncio.new_event_loop()
                        executor = Executor(app, TaskThreads(1), progress=state.progress)
                    assert executor is not None
                    outcome = loop.run_until_complete(executor.run(job))
                else:
                    outcome = state.run_sync(job)
                state.finish(job, outcome)
    finally:
        try:
            state.close()
        finally:
            if loop is not None:
                assert executor is not None
                loop.run_until_complete(_close_async(app, executor))
                loop.close()


async def adrain(
    app: App,
    *,
    queues: Sequence[str] | None = None,
    retry_now: bool = True,
    max_wait: float = 10.0,
    max_rounds: int = 100,
) -> list[Ran]:
    """Async twin of `drain()`, for async tests: async tasks run on the running event loop
    (sync tasks, and the claims and outcomes, block it while they run, as a test can afford)."""
    state = _Drain(app, queues, retry_now, max_wait, max_rounds)
    executor = Executor(app, TaskThreads(1), progress=state.progress)
    try:
        while True:
            jobs = state.claim()
            if jobs is None:
                wait = state.retry_wait()
                if wait is None:
                    return state.ran
                await asyncio.sleep(wait)  # until a known due time, not polling a condition
                continue
            for job in jobs:
                state.started(job)
                task = app.tasks.get(job.task_name)
                if task is not None and task.is_async:
                    outcome = await executor.run(job)
                else:
                    outcome = state.run_sync(job)
                state.finish(job, outcome)
    finally:
        try:
            state.close()
        finally:
            await executor.transactional.aclose()
            executor.thread_pool.shutdown(wait=False)


async def _close_async(app: App, executor: Executor) -> None:
    """Close what drain()'s own event loop opened: the job connections of transactional async
    tasks, and the app's shared async connection on that loop (used by `adelay()`)."""
    await executor.transactional.aclose()
    executor.thread_pool.shutdown(wait=False)
    conn = app._async_conns.pop(asyncio.get_running_loop(), None)
    if conn is not None:
        await conn.close()
