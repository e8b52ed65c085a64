"""Write outcomes back in batches, each row guarded by its claim's fencing token (its lease).

Outcomes wait in memory until written; a failed write (lost connection, server restart) is
retried with backoff, never dropped. An outcome whose job is no longer `running` under the same
lease (it was rescued from this worker and claimed again, or this very outcome was written
already and the reply lost) is discarded and logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import psycopg

from pgqueue import queries
from pgqueue._connection import ReconnectingConnection
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


class Completer:
    """Collects outcomes and flushes them in batches of up to `batch_size`."""

    def __init__(self, connection: ReconnectingConnection, batch_size: int = 100) -> None:
        self._connection = connection
        self._batch_size = batch_size
        self._pending: list[Outcome] = []
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
        return len(self._pending)

    def pending_ids(self) -> set[int]:
        """Jobs whose outcome is waiting to be written (they are still running in the table)."""
        return {outcome.job.id for outcome in self._pending}

    async def run(self) -> None:
        """Flush until closed and drained."""
        backoff = 0.1
        while True:
            if not self._pending:
                self._idle.set()
                if self._closed:
                    return
                self._has_work.clear()
                await self._has_work.wait()
                continue
            batch = self._pending[: self._batch_size]
            try:
                applied = await self._write(await self._connection.get(), batch)
            except (psycopg.OperationalError, psycopg.InterfaceError, DatabaseUnavailable) as exc:
                logger.warning(
                    "could not write %d job outcome(s), retrying in %.1fs: %s",
                    len(batch),
                    backoff,
                    " ".join(str(exc).split()),
                )
                await self._connection.reset()
                await asyncio.sleep(backoff)  # backoff between reconnects, not a test wait
                backoff = min(backoff * 2, 1.0)  # results show up soon after an outage
                continue
            backoff = 0.1
            del self._pending[: len(batch)]
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

    async def _write(self, conn: psycopg.AsyncConnection[Any], batch: list[Outcome]) -> set[int]:
        """Write a batch; if an outcome cannot be written (the database refuses it, or it
        cannot even be encoded), find it and store that job as FAILED with the reason
        instead, so that no job is left running under a live worker and every other outcome
        of the batch is written once."""
        try:
            return await write_outcomes(conn, batch)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise
        except psycopg.Error as exc:
            if conn.broken:
                raise
            problem = "the database refused this attempt's {} outcome: " + _one_line(exc)
        except Exception as exc:  # nothing was sent: the document could not be built
            if conn.broken:
                raise
            problem = (
                "this attempt's {} outcome could not be stored: "
                f"{type(exc).__name__}: {_one_line(exc)}"
            )
        if len(batch) > 1:
            applied: set[int] = set()
            for outcome in batch:
                applied |= await self._write(conn, [outcome])
            return applied
        outcome = batch[0]
        head, _, tail = problem.partition("{}")  # not format(): the error may hold braces
        reason = f"{head}{outcome.status}{tail}"
        if isinstance(outcome, Failed) and outcome.error.get("type") == "OutcomeNotStored":
            logger.error(
                "job %d %s: could not even store its failure (%s); it stays running "
                "until this worker stops",
                outcome.job.id,
                outcome.job.task_name,
                reason,
            )
            return set()
        logger.error(
            "job %d %s attempt %d: %s",
            outcome.job.id,
            outcome.job.task_name,
            outcome.job.attempt,
            reason,
        )
        replacement = Failed(outcome.job, simple_error("OutcomeNotStored", reason))
        return await self._write(conn, [replacement])

    async def drain(self, timeout: float | None = None) -> bool:
        """Close for new work and wait until every outcome is written; False on timeout."""
        self._closed = True
        self._has_work.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def close(self) -> None:
        await self._connection.reset()


def write_outcomes_sync(conn: psycopg.Connection[Any], outcomes: list[Outcome]) -> set[int]:
    """`write_outcomes` on a sync connection, inside the caller's transaction (transactional
    tasks write their own SUCCEEDED this way, before their transaction commits)."""
    rows = conn.execute(queries.COMPLETE_JOBS, {"outcomes": outcomes_document(outcomes)}).fetchall()
    return {row[0] for row in rows}
