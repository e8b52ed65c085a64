"""One async autocommit connection of pgqueue's own, made again after it breaks: what each of a
worker's loops (claiming, writing outcomes, maintenance) holds."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg

if TYPE_CHECKING:
    from pgqueue.app import App


# For the connections that claim jobs and write outcomes: every statement they run has one
# good plan, ordered or primary-key index scans of pgqueue_jobs, and these settings leave the
# planner no other. The hot table's statistics are usually taken while it is nearly empty
# (autovacuum analyses a drained queue); on them the planner took a 20,000-job backlog for a
# few rows and chose, by turns, a sequential scan of the table for each claim and completion,
# or a bitmap scan and sort of the whole backlog for each claim: 2-10 ms a statement instead
# of 0.3, growing with the backlog. (Not for statements that read the system catalogs, such
# as the rescue's look at pg_locks: without sequential scans their plans are far slower.)
#
# The same one good plan is why these statements are planned once per connection (a generic
# plan, kept until ANALYZE or DDL invalidates it) rather than for each execution. Left to
# choose, PostgreSQL compares its first five custom plans with the generic one, and a claim
# of a few jobs looks cheaper planned for its own LIMIT: the claim connection then planned
# every claim afresh, which took longer than running it, and the worker drained a burst 30%
# slower (45 against 90 ms of claim-session CPU per 1,000 jobs; docs/benchmarks.md). Which
# way it went changed with each ANALYZE, so from one run to the next.
HOT_PATH_SETTINGS = (
    "SET enable_seqscan = off; SET enable_bitmapscan = off; SET enable_sort = off;"
    " SET plan_cache_mode = force_generic_plan"
)


class ReconnectingConnection:
    """`get()` returns the connection, connecting first if there is none or it broke (and
    running `setup`, such as HOT_PATH_SETTINGS, on each new one); `reset()` closes it after
    an error, so the next `get()` starts afresh (and calls `on_lost()` if it had been made);
    `close()` closes it for good."""

    def __init__(
        self, app: App, setup: str | None = None, on_lost: Callable[[], None] | None = None
    ) -> None:
        self._app = app
        self._setup = setup
        self._on_lost = on_lost
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def get(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = await self._app.aconnect(autocommit=True)
            if self._setup is not None:
                try:
                    await conn.execute(self._setup)
                except BaseException:
                    await conn.close()
                    raise
            self._conn = conn
        return self._conn

    async def reset(self) -> None:
        if self._conn is not None and self._on_lost is not None:
            self._on_lost()
        await self.close()

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self._conn.close()
        self._conn = None
