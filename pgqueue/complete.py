"""Write outcomes back in batches, each row guarded by its claim's fencing token (its lease).

Outcomes wait in memory until written, and none is dropped for an error. When the database
cannot take writes for now (a lost connection, a restart, a standby after a failover, a
conflict, a resource run out, a retry meeting a key that an enqueue took meanwhile), the
same outcomes are written again after a backoff, on a new connection. Any other error refuses
what was sent: the batch is written again one outcome at a time, and an outcome refused on its
own (or one that cannot be encoded) is replaced by a FAILED `OutcomeNotStored` that says why.
Should even that be refused, the fault is not the outcome's: it is kept, behind the others,
and written again after a backoff.

An outcome whose job is no longer `running` under the same lease (it was rescued from this
worker and claimed again, or this very outcome was written already and the reply lost) is
discarded and logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from pgqueue import queries
from pgqueue._connection import ConnectionLane, ReconnectingConnection
from pgqueue.claim import Claim, Position, claim_params, read_claim
from pgqueue.errors import DatabaseUnavailable
from pgqueue.outcome import (
    MAX_MESSAGE,
    Failed,
    Outcome,
    RetryLater,
    Succeeded,
    simple_error,
    storable_text,
)

logger = logging.getLogger("pgqueue.worker")


def _one_line(exc: BaseException) -> str:
    """An error's message on one line, bounded and storable; never raises."""
    try:
        text = " ".join(str(exc).split())
    except Exception:
        text = ""
    return storable_text(text or type(exc).__name__, MAX_MESSAGE // 2)


# What the database says when it cannot take writes for now, whatever was sent: the
# connection is lost or the server is going down (class 08, 57P01-57P03), a transaction
# conflict (class 40) or lock timeout (55P03), a resource ran out (class 53), the server is
# a standby (25006, after a failover), or a system error (class 58). Any other error refuses
# what was sent. (psycopg's classes do not sort them this way: ProgramLimitExceeded, for a
# document past jsonb's 256 MB, is an OperationalError; ReadOnlySqlTransaction an
# InternalError.)
_RETRY_CLASSES = ("08", "40", "53", "58")
_RETRY_STATES = frozenset({"57P01", "57P02", "57P03", "55P03", "25006"})
UNIQUE_VIOLATION = "23505"
# How long outcomes wait for the claim that was to take them along before they are written on
# their own (the claimer is held up: no heartbeat, a reconnect).
RIDE_WAIT = 0.05


def cannot_write_now(exc: BaseException, conn: psycopg.AsyncConnection[Any] | None) -> bool:
    """Whether `exc`, raised writing outcomes on `conn` (None: before it was made), says the
    database cannot take writes for now (retry the same outcomes later, on a new connection)
    rather than refusing these outcomes."""
    if (
        conn is None
        or conn.broken
        or isinstance(exc, (psycopg.InterfaceError, DatabaseUnavailable))
    ):
        return True
    if not isinstance(exc, psycopg.Error):
        return False  # nothing was sent: the document could not be built
    state = exc.sqlstate
    if state is None:  # raised by psycopg itself: a lost connection, or data it cannot send
        return isinstance(exc, psycopg.OperationalError)
    if state == UNIQUE_VIOLATION and exc.diag.constraint_name == queries.QUEUED_KEY_INDEX:
        # A retry put its job back under a key held while queued just as an enqueue of that
        # key committed (queries._queued_key_back): a conflict, not a refusal. Written
        # again, the retry sees that job and runs without the key.
        return True
    return state[:2] in _RETRY_CLASSES or state in _RETRY_STATES


def outcomes_document(outcomes: list[Outcome]) -> str:
    """The COMPLETE_JOBS parameter for a batch: one JSON array, one object per outcome.

    One text parameter is far cheaper to send than eight arrays; a success (the common case)
    is spelled by hand, its result being JSON already.
    """
    parts = []
    for outcome in outcomes:
        job = outcome.job
        if isinstance(outcome, Succeeded):
            parts.append(
                f'{{"id":{job.id},"lease":{job.lease},"status":"succeeded",'
                f'"result":{outcome.result_json}}}'
            )
            continue
        item: dict[str, Any] = {
            "id": job.id,
            "lease": job.lease,
            "status": outcome.status,
            "error": outcome.error,
        }
        if isinstance(outcome, RetryLater):
            item["delay"] = outcome.delay
            item["eta"] = outcome.eta.isoformat() if outcome.eta else None
            item["refund"] = 1 if outcome.refund_attempt else 0
        parts.append(json.dumps(item))
    return "[" + ",".join(parts) + "]"


async def write_outcomes(conn: psycopg.AsyncConnection[Any], outcomes: list[Outcome]) -> set[int]:
    """Write a batch in one statement (in autocommit: its own transaction); returns the ids
    that were applied (still leased)."""
    cur = await conn.execute(queries.COMPLETE_JOBS, {"outcomes": outcomes_document(outcomes)})
    return {row[0] for row in await cur.fetchall()}


async def write_outcomes_and_claim(
    conn: psycopg.AsyncConnection[Any],
    outcomes: list[Outcome],
    queues: Sequence[str],
    limit: int,
    worker_id: int,
    after: Mapping[str, Collection[Position]] | None = None,
) -> tuple[Claim, set[int]]:
    """Write a batch of outcomes and claim the next jobs in one round trip (a pipeline: the
    two statements commit together, or neither does); each fenced as on its own. Returns the
    claim, and the ids whose outcome applied."""
    async with conn.pipeline():
        written = await conn.execute(
            queries.COMPLETE_JOBS, {"outcomes": outcomes_document(outcomes)}
        )
        async with conn.cursor() as cur:
            await cur.execute(queries.CLAIM_JOBS, claim_params(queues, limit, worker_id, after))
            rows = await cur.fetchall()
        applied = {row[0] for row in await written.fetchall()}
    return read_claim(rows), applied


@dataclass(slots=True)
class _NotStored(Failed):
    """The FAILED written in place of an outcome the database refused, with that outcome."""

    original: Outcome


class Completer:
    """Collects outcomes and flushes them in batches of up to `batch_size`."""

    def __init__(
        self, connection: ReconnectingConnection | ConnectionLane, batch_size: int = 100
    ) -> None:
        self._connection = connection
        self._batch_size = batch_size
        self._pending: list[Outcome] = []
        # Outcomes the claimer took along with its claim (`take_riders`), on their way.
        self._riding: list[Outcome] = []
        # After a claim with riders failed: none ride until the completer has written what
        # is pending on its own (and found any outcome the database refuses).
        self._riders_welcome = True
        self._singly = 0  # after a refused batch: how many outcomes to write one at a time
        # Batches written along with a claim, and such round trips that failed: for tests
        # and the curious.
        self.rides = 0
        self.failed_rides = 0
        # Whether a claim is coming that will take the pending outcomes along (the worker
        # says; never, for a completer on its own), and set when a claim took some.
        self.claim_coming: Callable[[], bool] = lambda: False
        self._taken = asyncio.Event()
        self._has_work = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    def submit(self, outcome: Outcome) -> None:
        self._pending.append(outcome)
        self._idle.clear()
        self._has_work.set()

    @property
    def backlog(self) -> int:
        return len(self._pending) + len(self._riding)

    def pending_ids(self) -> set[int]:
        """Jobs whose outcome is waiting to be written (they are still running in the table)."""
        return {outcome.job.id for outcome in (*self._pending, *self._riding)}

    # -- outcomes that ride along with a claim --------------------------------------------

    def take_riders(self) -> list[Outcome]:
        """The pending outcomes (a batch at most) for the claimer to send in the same round
        trip as its claim, during its turn on the shared connection; then `riders_written`
        or `riders_failed`. None while the completer writes one at a time or after a
        failure."""
        if not self._pending or not self._riders_welcome or self._singly or self._riding:
            return []
        riders = self._pending[: self._batch_size]
        del self._pending[: len(riders)]
        self._riding = riders
        self._taken.set()
        return riders

    def riders_written(self, applied: set[int]) -> None:
        """They committed with the claim; `applied`: the ids still leased."""
        riders, self._riding = self._riding, []
        self.rides += 1
        self._report_dropped(riders, applied)
        self._check_idle()

    def riders_failed(self) -> None:
        """Their round trip failed (nothing of it committed): back to the head of the
        queue, for the completer to write on its own and sort out what went wrong."""
        riders, self._riding = self._riding, []
        self.failed_rides += 1
        self._pending[:0] = riders
        self._riders_welcome = False
        if riders:
            self._idle.clear()
            self._has_work.set()

    def _check_idle(self) -> None:
        if not self._pending and not self._riding:
            self._idle.set()

    async def run(self) -> None:
        """Flush until closed and drained."""
        backoff = 0.1
        while True:
            if not self._pending:
                self._check_idle()
                if self._closed and not self._riding:
                    return
                self._has_work.clear()
                await self._has_work.wait()
                continue
            if self._riders_welcome and not self._closed and self.claim_coming():
                # A claim is on its way (the worker claims again as these jobs' slots free):
                # it takes these outcomes along, in its round trip. Should none come within
                # RIDE_WAIT (the claimer is held up), they are written on their own.
                self._taken.clear()
                try:
                    await asyncio.wait_for(self._taken.wait(), RIDE_WAIT)
                    continue
                except asyncio.TimeoutError:
                    pass
            else:
                # One step of the loop first: a claimer woken by the same jobs' ends takes its
                # turn first.
                await asyncio.sleep(0)
            batch: list[Outcome] = []
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                async with self._connection.use() as conn:
                    # Taken in the turn: the claimer may have taken some along meanwhile.
                    batch = self._pending[: 1 if self._singly else self._batch_size]
                    if not batch:
                        continue
                    applied = await write_outcomes(conn, batch)
                    del self._pending[: len(batch)]
            except Exception as exc:
                # Until these are written, none ride with a claim: the pending list is this
                # loop's to rearrange (see _refused).
                self._riders_welcome = False
                if cannot_write_now(exc, conn):
                    logger.warning(
                        "could not write %d job outcome(s), retrying in %.1fs: %s",
                        len(batch),
                        backoff,
                        _one_line(exc),
                    )
                    await self._connection.reset()
                    await asyncio.sleep(backoff)  # backoff between reconnects, not a test wait
                    backoff = min(backoff * 2, 1.0)  # results show up soon after an outage
                elif len(batch) > 1:
                    # One outcome of the batch (they all went as one document) is refused:
                    # write them one at a time, in order, to find it.
                    logger.warning(
                        "the database refused a batch of %d job outcomes (%s); writing them "
                        "one at a time",
                        len(batch),
                        _one_line(exc),
                    )
                    self._singly = len(batch)
                elif await self._refused(batch[0], exc, backoff):
                    backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.1
            self._singly = max(self._singly - len(batch), 0)
            self._riders_welcome = True
            self._report_dropped(batch, applied)

    @staticmethod
    def _report_dropped(batch: list[Outcome], applied: set[int]) -> None:
        """Log the outcomes of `batch` the database did not apply: their lease was gone."""
        for outcome in batch:
            if outcome.job.id not in applied:
                logger.warning(
                    "job %d %s attempt %d: lost its lease (rescued and claimed again "
                    "elsewhere); outcome %s dropped",
                    outcome.job.id,
                    outcome.job.task_name,
                    outcome.job.attempt,
                    outcome.status,
                )

    async def _refused(self, outcome: Outcome, exc: Exception, backoff: float) -> bool:
        """The database refused `outcome`, first in the pending list, written alone (or it
        could not even be encoded): put in its place a FAILED that says why, so that the job
        does not stay running under a live worker. If that was the replacement already, the
        fault is not the outcome's: keep the original pending, move it behind the others and
        wait `backoff`; returns True then."""
        if isinstance(outcome, _NotStored):
            original = outcome.original
            logger.error(
                "job %d %s attempt %d: the database refused even its failure (%s), so this "
                "is not the outcome's fault; its %s outcome is kept and written again in %.1fs",
                outcome.job.id,
                outcome.job.task_name,
                outcome.job.attempt,
                _one_line(exc),
                original.status,
                backoff,
            )
            del self._pending[0]
            self._pending.append(original)
            await asyncio.sleep(backoff)  # backoff before asking the database again
            return True
        if isinstance(exc, psycopg.Error):
            problem = "the database refused this attempt's {} outcome: " + _one_line(exc)
        else:  # nothing was sent: the document could not be built
            problem = (
                "this attempt's {} outcome could not be stored: "
                f"{type(exc).__name__}: {_one_line(exc)}"
            )
        head, _, tail = problem.partition("{}")  # not format(): the error may hold braces
        reason = f"{head}{outcome.status}{tail}"
        logger.error(
            "job %d %s attempt %d: %s; writing FAILED (OutcomeNotStored) instead",
            outcome.job.id,
            outcome.job.task_name,
            outcome.job.attempt,
            reason,
        )
        self._pending[0] = _NotStored(
            outcome.job, simple_error("OutcomeNotStored", reason), original=outcome
        )
        return False

    async def drain(self, timeout: float | None = None) -> bool:
        """Close for new work and wait until every outcome is written (riders included);
        False on timeout."""
        self._closed = True
        self._has_work.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def close(self) -> None:
        await self._connection.close()


def write_outcomes_sync(conn: psycopg.Connection[Any], outcomes: list[Outcome]) -> set[int]:
    """`write_outcomes` on a sync connection, inside the caller's transaction (transactional
    tasks write their own SUCCEEDED this way, before their transaction commits)."""
    rows = conn.execute(queries.COMPLETE_JOBS, {"outcomes": outcomes_document(outcomes)}).fetchall()
    return {row[0] for row in rows}
