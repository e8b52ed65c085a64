"""PgQueuer's side of the peer benchmark: the factory `pgq run peer_tasks.pgqueuer_app:create`
starts, and the connection helper the producer shares with it.

Environment: PEER_DSN (libpq conninfo of the run's database), PEER_PGQ_DRIVER ("asyncpg" or
"psycopg"), PEER_SAMPLES (see peer_tasks.record_latency).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pgqueuer import QueueManager
from pgqueuer.db import AsyncpgDriver, Driver, PsycopgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries
from psycopg.conninfo import conninfo_to_dict

from . import record_latency


def _asyncpg_kwargs(dsn: str) -> dict[str, Any]:
    """asyncpg takes URLs or keywords, not libpq's "key=value" conninfo: translate."""
    params = conninfo_to_dict(dsn)
    names = {"host": "host", "port": "port", "user": "user", "password": "password"}
    kwargs: dict[str, Any] = {new: params[old] for old, new in names.items() if old in params}
    if "dbname" in params:
        kwargs["database"] = params["dbname"]
    if "port" in kwargs:
        kwargs["port"] = int(kwargs["port"])
    return kwargs


@asynccontextmanager
async def connect(dsn: str, driver: str) -> AsyncIterator[Driver]:
    """One connection wrapped in PgQueuer's driver for it (asyncpg is its documented faster
    driver; psycopg needs autocommit, as its docs require)."""
    if driver == "asyncpg":
        import asyncpg

        aconn = await asyncpg.connect(**_asyncpg_kwargs(dsn))
        try:
            yield AsyncpgDriver(aconn)
        finally:
            await aconn.close()
    else:
        import psycopg

        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as pconn:
            yield PsycopgDriver(pconn)


@asynccontextmanager
async def create() -> AsyncIterator[QueueManager]:
    """A QueueManager alone (no SchedulerManager: pgqueue's worker runs with --no-scheduler
    in the same benchmark), on one dedicated connection, as PgQueuer's tuning guide advises
    for the manager that LISTENs."""
    async with connect(os.environ["PEER_DSN"], os.environ.get("PEER_PGQ_DRIVER", "asyncpg")) as d:
        qm = QueueManager(Queries(d))

        @qm.entrypoint("noop")
        async def noop(job: Job) -> None:
            """Does nothing: the drain measures the queue, not the task."""

        @qm.entrypoint("probe")
        async def probe(job: Job) -> None:
            """Records its pickup latency; the payload is the producer's send time."""
            assert job.payload is not None
            record_latency(float(job.payload))

        yield qm


def main() -> None:
    """`python -m peer_tasks.pgqueuer_app --batch-size N`: PgQueuer's documented programmatic
    twin of `pgq run peer_tasks.pgqueuer_app:create` (guides/programmatic-run.md), on uvloop
    when it is installed, as `pgq run` does. Used because `pgq run` itself fails in 1.6.0 with
    the installed typer (its --log-level option reaches the logger as a str: "'str' object has
    no attribute 'name'"), whatever the options."""
    import argparse
    import asyncio

    import pgqueuer

    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=10)
    args = parser.parse_args()
    worker = pgqueuer.run(create, batch_size=args.batch_size)
    try:
        import uvloop
    except ImportError:
        asyncio.run(worker)
    else:
        uvloop.run(worker)


if __name__ == "__main__":
    main()
