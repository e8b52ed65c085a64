"""The async autocommit connection of pgqueue's own that a worker's loops (claiming, writing
outcomes and progress, maintenance) take turns on, made again after it breaks: with the
listening connection, the worker's second and last at rest."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import psycopg

if TYPE_CHECKING:
    from pgqueue.app import App


# For the connection that claims jobs and writes outcomes: every statement it runs there has one
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


# The planner's usual settings, for one transaction of HOT_PATH_SETTINGS' connection.
USUAL_PLANNING = (
    "SET LOCAL enable_seqscan = on; SET LOCAL enable_bitmapscan = on;"
    " SET LOCAL enable_sort = on; SET LOCAL plan_cache_mode = auto"
)

AsyncConn = psycopg.AsyncConnection[Any]


class ReconnectingConnection:
    """One async autocommit connection, made again after it breaks, that the loops of a
    worker (claiming, writing outcomes and progress, maintenance) take turns on.

    `use()` holds the connection for one statement or a few, connecting first if there is
    none or it broke (and running `setup`, such as HOT_PATH_SETTINGS, on each new one); while
    one loop holds it, the others wait their turn, so that no statement of one lands inside
    another's transaction. `reset()` closes it after an error, between two turns, so that the
    next `use()` starts afresh (and calls `on_lost()` if it had been made); `close()` closes it
    for good. `lane()` is the same connection for one more loop.
    """

    def __init__(
        self, app: App, setup: str | None = None, on_lost: Callable[[], None] | None = None
    ) -> None:
        self._app = app
        self._setup = setup
        self._on_lost = on_lost
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    def lane(self, on_lost: Callable[[], None] | None = None) -> ConnectionLane:
        """The connection for one more loop (which reports its losses to `on_lost`, else to
        the connection's own)."""
        return ConnectionLane(self, on_lost)

    @contextlib.asynccontextmanager
    async def use(self, *, usual_planning: bool = False) -> AsyncIterator[AsyncConn]:
        """The connection for this loop's turn. `usual_planning`: a transaction, planned with
        PostgreSQL's usual settings rather than `setup`'s (for statements that read the
        system catalogs, whose plans HOT_PATH_SETTINGS would ruin)."""
        async with self._lock:
            conn = await self._connect()
            if not usual_planning or self._setup is None:
                yield conn
                return
            async with conn.transaction():
                await conn.execute(USUAL_PLANNING)
                yield conn

    async def get(self) -> AsyncConn:
        """The connection, for a caller that is the only one to use it (tests)."""
        return await self._connect()

    async def _connect(self) -> AsyncConn:
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

    async def reset(
        self,
        on_lost: Callable[[], None] | None = None,
        failed: AsyncConn | None = None,
    ) -> None:
        """Close the connection (`failed`: only if it is still that one, so that two loops
        that met the same loss make one new connection, not two)."""
        async with self._lock:
            if failed is not None and failed is not self._conn:
                return
            if self._conn is not None:
                report = on_lost or self._on_lost
                if report is not None:
                    report()
            await self._close()

    async def close(self) -> None:
        async with self._lock:
            await self._close()

    async def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self._conn.close()
        self._conn = None


class ConnectionLane:
    """A loop's way onto a shared ReconnectingConnection: its turns, and the losses it
    notices reported as its own. Closing a lane leaves the connection to its owner."""

    def __init__(self, shared: ReconnectingConnection, on_lost: Callable[[], None] | None) -> None:
        self._shared = shared
        self._on_lost = on_lost
        self._last: AsyncConn | None = None

    @contextlib.asynccontextmanager
    async def use(self, *, usual_planning: bool = False) -> AsyncIterator[AsyncConn]:
        async with self._shared.use(usual_planning=usual_planning) as conn:
            self._last = conn
            yield conn

    async def reset(self) -> None:
        """Close the connection this lane last used, unless another loop did already."""
        await self._shared.reset(self._on_lost, failed=self._last)

    async def close(self) -> None:
        """Nothing: the connection's owner closes it."""
