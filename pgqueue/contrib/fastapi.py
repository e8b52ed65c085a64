"""FastAPI integration: a lifespan that opens and closes an App, and a job's public view.

Only what an application would otherwise write by hand and could get subtly wrong lives here.
Enqueueing needs nothing: `await task.aapply_async(..., connection=session)` takes a SQLAlchemy
`AsyncSession` (or AsyncConnection, or psycopg AsyncConnection) as it is, and waiting is
`await job.wait_async(timeout=...)`. See docs/fastapi.md; installed by `pgqueue[fastapi]`.

>>> api = FastAPI(lifespan=pgqueue.contrib.fastapi.lifespan(queue))
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from pgqueue.app import App
from pgqueue.job import Job, JobStatus
from pgqueue.revisions import check_schema


def lifespan(
    queue: App, *, check: bool = True
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A FastAPI `lifespan=` that opens `queue` at startup and closes it at shutdown.

    At startup the database is reached and its schema checked, so that a wrong DSN or a
    database not yet migrated stops the application before it serves a request (with
    DatabaseUnavailable or SchemaNotMigrated saying what to do), not at its first enqueue.
    At shutdown the App's connection on the server's event loop is closed. `check=False`
    skips the startup check (for a database that may come up after the application).

    To run your own startup too, enter it inside yours:

    >>> @asynccontextmanager
    ... async def app_lifespan(api: FastAPI) -> AsyncIterator[None]:
    ...     async with pgqueue.contrib.fastapi.lifespan(queue)(api):
    ...         yield
    ...     await engine.dispose()
    """

    @asynccontextmanager
    async def open_queue(api: Any) -> AsyncIterator[None]:
        if check:
            # psycopg's sync connection, off the event loop: this runs once, at startup.
            await asyncio.to_thread(_check_database, queue)
        try:
            yield
        finally:
            await queue.aclose()

    return open_queue


def _check_database(queue: App) -> None:
    with queue.connect() as conn:
        check_schema(conn)


class JobError(BaseModel):
    """Why a job failed or was cancelled: the exception's type and message."""

    type: str
    message: str


class JobInfo(BaseModel):
    """What an HTTP client may see of a job: a response model for a job-status endpoint.

    The traceback of a failed job is left out on purpose: it shows the server's code and
    paths to whoever asks. Its arguments are left out too (they may carry personal data);
    return them yourself where your clients are entitled to them.

    >>> @api.get("/jobs/{job_id}")
    ... async def job_status(job_id: int) -> JobInfo:
    ...     return JobInfo.of(await queue.aget_job(job_id))
    """

    id: int
    task: str
    queue: str
    status: JobStatus
    attempts: int
    max_attempts: int
    created_at: datetime | None
    run_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    result: Any = None
    error: JobError | None = None

    @classmethod
    def of(cls, job: Job) -> JobInfo:
        """The view of `job` as its handle last read it (`await job.arefresh()` to read again)."""
        error = None
        if job.error is not None:
            error = JobError(
                type=str(job.error.get("type", "Unknown")),
                message=str(job.error.get("message", "")),
            )
        return cls(
            id=job.id,
            task=job.task_name,
            queue=job.queue,
            status=job.status,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            created_at=job.created_at,
            run_at=job.run_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            result=job.result if job.status is JobStatus.SUCCEEDED else None,
            error=error,
        )
