"""Fleet-wide limits on a task: a rate (`rate_limit="100/m"`), a number of running jobs
(`concurrency_limit=N`) and a number of running jobs per key (`key_concurrency_limit=N`, with
`concurrency_key=` at enqueue), enforced by the claim, across every worker at once.

A task's limits are declared with it and written to `pgqueue_limits` when a worker starts
(`sync_limits`). Its jobs are marked at enqueue (`pgqueue_jobs.limited`) and left out of the
claimable index, so that the claim of every other job (CLAIM_JOBS) never reads them and costs
what it did; a worker takes limited jobs by a claim of their own (`claim_limited_jobs`), in one
transaction: it locks the limits' rows (a limit another worker is claiming is skipped, never
waited for), then takes, in one statement begun after the lock, at most what each limit allows
now:

- a rate of N per period is kept as the start times of the jobs claimed in the last period
  (at most N of them, on the limit's row): a claim takes at most N minus those, so no window
  of one period, wherever it starts, holds more than N starts, on any number of workers;
- running counts are counted, not kept: the running jobs of the task (or of the key) are in a
  small index, and the statement's snapshot, begun after the lock, sees every claim made
  before it. So a job that ends by any path (an outcome, a rescue, an operator's action) frees
  its place when it leaves the running state, with no count to give back.

Jobs of a key that is full are passed over, so one customer's backlog never holds up another's.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from pgqueue import queries
from pgqueue.claim import Claim, read_claim
from pgqueue.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from pgqueue.tasks import Task

logger = logging.getLogger("pgqueue.worker")

# The periods a rate may name, Celery's spelling: per second, minute or hour.
PERIODS = {"s": 1, "m": 60, "h": 3600}
# A rate keeps one start time per job of the period on its limit's row, so N is bounded.
MAX_RATE = 10_000
_RATE = re.compile(r"\s*(\d+)\s*/\s*([smh])\s*")

# How soon to look again at a limit that another worker was claiming (its lock was held for
# the length of one claim).
LOCKED_RETRY_SECONDS = 0.02


@dataclass(frozen=True)
class Limits:
    """A task's declared limits; None means no limit of that kind."""

    rate: int | None = None
    per_seconds: int | None = None
    concurrency: int | None = None
    key_concurrency: int | None = None

    def describe(self) -> str:
        parts = []
        if self.rate is not None and self.per_seconds is not None:
            unit = {v: k for k, v in PERIODS.items()}[self.per_seconds]
            parts.append(f"rate {self.rate}/{unit}")
        if self.concurrency is not None:
            parts.append(f"concurrency {self.concurrency}")
        if self.key_concurrency is not None:
            parts.append(f"per key {self.key_concurrency}")
        return ", ".join(parts)


def parse_rate_limit(rate_limit: str) -> tuple[int, int]:
    """`"100/m"` -> (100, 60): N jobs per second (`/s`), minute (`/m`) or hour (`/h`)."""
    if not isinstance(rate_limit, str):
        raise ConfigurationError(
            f"rate_limit must be a string such as '100/m' (N per s, m or h), got {rate_limit!r}"
        )
    match = _RATE.fullmatch(rate_limit)
    if match is None:
        raise ConfigurationError(
            f"rate_limit {rate_limit!r} is not understood: write N/s, N/m or N/h with N a whole "
            "number, such as '100/m'"
        )
    rate, unit = int(match.group(1)), match.group(2)
    if rate < 1:
        raise ConfigurationError(
            f"rate_limit {rate_limit!r} allows nothing: N must be 1 or more (to stop a task "
            "from running, pause its queue)"
        )
    if rate > MAX_RATE:
        per = PERIODS[unit]
        raise ConfigurationError(
            f"rate_limit {rate_limit!r} is above {MAX_RATE} per period: state it over a shorter "
            f"period (about {math.ceil(rate / per)}/s)"
            if per > 1
            else f"rate_limit {rate_limit!r} is above {MAX_RATE}/s, the most a limit can keep"
        )
    return rate, PERIODS[unit]


def _count(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a whole number of jobs, 1 or more: {value!r}")
    return value


def declared_limits(
    rate_limit: str | None,
    concurrency_limit: int | None,
    key_concurrency_limit: int | None,
) -> Limits | None:
    """A task's limits from its declaration (None: it has none); bad values are refused."""
    rate, per = parse_rate_limit(rate_limit) if rate_limit is not None else (None, None)
    concurrency = _count("concurrency_limit", concurrency_limit)
    key_concurrency = _count("key_concurrency_limit", key_concurrency_limit)
    if rate is None and concurrency is None and key_concurrency is None:
        return None
    return Limits(rate, per, concurrency, key_concurrency)


def checked_concurrency_key(task: Task[Any, Any], key: str | None) -> str | None:
    """`concurrency_key=` at enqueue: a string, for a task that declares a per-key limit."""
    if key is None:
        return None
    if not isinstance(key, str) or not key:
        raise TypeError(f"concurrency_key must be a non-empty string, got {key!r}")
    if task.limits is None or task.limits.key_concurrency is None:
        raise ConfigurationError(
            f"concurrency_key={key!r} given, but task {task.name} declares no per-key limit: "
            "add key_concurrency_limit=N to its @app.task(...)"
        )
    return key


def limited_task_names(tasks: Iterable[Task[Any, Any]]) -> list[str]:
    return sorted(task.name for task in tasks if task.limits is not None)


def sync_limits(conn: psycopg.Connection[Any], tasks: Iterable[Task[Any, Any]]) -> None:
    """Write the limits the app's tasks declare, and remove those of its tasks that declare
    none any more (their waiting jobs are unmarked and announced, so that every worker takes
    them as plain jobs). Another app's tasks are left alone."""
    tasks = list(tasks)
    with conn.transaction():
        for task in tasks:
            if task.limits is None:
                continue
            conn.execute(
                queries.UPSERT_LIMIT,
                {
                    "name": task.name,
                    "rate": task.limits.rate,
                    "per_seconds": task.limits.per_seconds,
                    "concurrency": task.limits.concurrency,
                    "key_concurrency": task.limits.key_concurrency,
                },
            )
        unlimited = [task.name for task in tasks if task.limits is None]
        if unlimited:
            conn.execute(queries.DELETE_LIMITS, {"names": unlimited})
            conn.execute(queries.UNMARK_LIMITED_JOBS, {"names": unlimited})


def list_limits(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Every limit with what it holds now: for `pgqueue limits`."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(queries.LIST_LIMITS)
        return cur.fetchall()


@dataclass(frozen=True)
class LimitedClaim:
    claim: Claim
    # Seconds until a limit whose rate is spent frees a place (or a limit skipped because
    # another worker was claiming it can be tried again): the worker looks again then.
    look_again_in: float | None


async def claim_limited_jobs(
    conn: psycopg.AsyncConnection[Any],
    queues: Sequence[str],
    names: Sequence[str],
    limit: int,
    worker_id: int,
) -> LimitedClaim:
    """Claim up to `limit` due jobs of the limited tasks `names` in `queues`, at most what
    each task's limits allow now (see the module's docstring)."""
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute(queries.LOCK_LIMITS, {"names": list(names)})
        locked = [row[0] for row in await cur.fetchall()]
        if not locked:
            return LimitedClaim(Claim([], [], {}), LOCKED_RETRY_SECONDS if names else None)
        await cur.execute(
            queries.CLAIM_LIMITED_JOBS,
            {
                "names": locked,
                "queues": list(queues),
                "limit": limit,
                "worker_id": worker_id,
            },
        )
        rows = await cur.fetchall()
    # One row (LIMITS_ROW) says when a spent rate frees a place; the others are the claim's.
    look_again_in = None
    for row in [row for row in rows if row[1] == queries.LIMITS_ROW]:
        rows.remove(row)
        look_again_in = row[11]
    if len(locked) < len(names):
        look_again_in = min(look_again_in or LOCKED_RETRY_SECONDS, LOCKED_RETRY_SECONDS)
    return LimitedClaim(read_claim(rows), look_again_in)
