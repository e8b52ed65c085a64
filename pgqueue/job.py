"""The Job handle and JobStatus: what `delay()` returns and `app.get_job()` finds.

A leaf module: it knows the job row's shape and asks the app for a connection; it never
touches the worker.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pgqueue.errors import JobCancelled, JobFailed, JobNotFound

if TYPE_CHECKING:
    from pgqueue.app import App


class JobStatus(str, enum.Enum):
    """Where a job is in its life: queued -> running -> succeeded | failed | cancelled; a
    workflow step is `waiting` (never claimed) until its parents have ended."""

    WAITING = "waiting"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_finished(self) -> bool:
        return self in FINISHED_STATUSES

    def __str__(self) -> str:
        return self.value


FINISHED_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class Job:
    """A handle on one job row.

    Attributes are a snapshot taken when the handle was made or last refreshed; call
    `refresh()` to read the row again, or `wait()` to block until the job finishes.

    >>> job = add.delay(2, 3)
    >>> job.wait(timeout=10)
    5
    """

    def __init__(
        self, app: App, row: Mapping[str, Any], *, created: bool = True, replaced: bool = False
    ) -> None:
        self._app = app
        self.id: int = int(row["id"])
        # What the enqueue that made this handle did: inserted the job (`created`), or met a
        # unique key held by this existing job and returned it (replacing its arguments and
        # options: `replaced`). A handle from get_job() says created.
        self.created: bool = created
        self.replaced: bool = replaced
        self._load(row)

    def _load(self, row: Mapping[str, Any]) -> None:
        self.task_name: str = row["task_name"]
        self.queue: str = row["queue"]
        self.status: JobStatus = JobStatus(row["status"])
        self.priority: int = row["priority"]
        self.attempts: int = row["attempts"]
        self.max_attempts: int = row["max_attempts"]
        self.args: list[Any] = list(row.get("args") or [])
        self.kwargs: dict[str, Any] = dict(row.get("kwargs") or {})
        self.run_at: datetime | None = row.get("run_at")
        self.created_at: datetime | None = row.get("created_at")
        self.started_at: datetime | None = row.get("started_at")
        self.finished_at: datetime | None = row.get("finished_at")
        self.result: Any = row.get("result")
        self.error: dict[str, Any] | None = row.get("error")
        self.expires_at: datetime | None = row.get("expires_at")
        self.cancel_requested_at: datetime | None = row.get("cancel_requested_at")
        # What the job carries apart from its arguments; anything but an object is not headers.
        headers = row.get("headers")
        self.headers: dict[str, Any] = dict(headers) if isinstance(headers, dict) else {}
        self.unique_key: str | None = row.get("unique_key")
        # What the task last published with `set_progress` (None if nothing), and when it was
        # written; a retry starts afresh, a finished job keeps its last attempt's.
        self.progress: Any = row.get("progress")
        self.progress_at: datetime | None = row.get("progress_at")
        # The workflow the job is a step of (`app.get_workflow(job.workflow_id)`), or None.
        workflow_id = row.get("workflow_id")
        self.workflow_id: int | None = int(workflow_id) if workflow_id is not None else None

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.task_name} {self.status.value} attempts={self.attempts}>"

    @property
    def duplicate(self) -> bool:
        """The enqueue that returned this handle inserted nothing: a job holding its unique
        key existed already, and this is that job (see `replaced`)."""
        return not self.created

    # -- sync ---------------------------------------------------------------------------

    def refresh(self) -> Job:
        """Read the row again and update this handle; returns self."""
        row = self._app._fetch_job_row(self.id)
        if row is None:
            raise JobNotFound(f"job {self.id} no longer exists (was it pruned?)")
        self._load(row)
        return self

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the job finishes and return the task's return value.

        Woken by NOTIFY when the job completes. Raises `pgqueue.JobFailed` if the job ended
        FAILED or CANCELLED, and `TimeoutError` if it has not finished after `timeout` seconds.
        """
        self._app._wait_for_jobs([self.id], timeout)
        self.refresh()
        return self._outcome()

    def wait_progress(self, timeout: float | None = None) -> Any:
        """Block until the job publishes progress newer than this handle holds, or finishes;
        refresh the handle and return `progress`. Woken by NOTIFY; TimeoutError after
        `timeout` seconds without either.

        >>> while not job.status.is_finished:
        ...     print(job.wait_progress(timeout=60))
        """
        with contextlib.closing(
            self._app._watch_progress(self.id, self.progress_at, timeout)
        ) as rows:
            self._load(next(rows))
        return self.progress

    def progress_updates(self, timeout: float | None = None) -> Iterator[Any]:
        """Each progress value the job publishes, from the one it holds now (if any), until it
        finishes; the handle is refreshed with each. Values written in quick succession may
        be seen only as the latest. `timeout`: TimeoutError when no update comes for that
        many seconds. One connection for the whole iteration.

        >>> for progress in job.progress_updates():
        ...     print(progress)
        """
        seen = None
        with contextlib.closing(self._app._watch_progress(self.id, None, timeout)) as rows:
            for row in rows:
                self._load(row)
                if self.progress_at is not None and self.progress_at != seen:
                    seen = self.progress_at
                    yield self.progress

    def cancel(self, reason: str = "cancelled on request") -> bool:
        """Cancel the job: a queued job ends CANCELLED at once; for a running one the worker
        is told (async tasks are cancelled, sync tasks see `current_job().cancel_requested`)
        and no retry follows. False if the job had already finished."""
        done = self._app.cancel(self.id, reason)
        self.refresh()
        return done

    # -- async --------------------------------------------------------------------------

    async def acancel(self, reason: str = "cancelled on request") -> bool:
        """Async twin of `cancel()`."""
        done = await self._app.acancel(self.id, reason)
        await self.arefresh()
        return done

    async def arefresh(self) -> Job:
        """Async twin of `refresh()`."""
        row = await self._app._afetch_job_row(self.id)
        if row is None:
            raise JobNotFound(f"job {self.id} no longer exists (was it pruned?)")
        self._load(row)
        return self

    async def wait_async(self, timeout: float | None = None) -> Any:
        """Async twin of `wait()` (`await` is a keyword, so this twin has a suffix)."""
        await self._app._await_jobs([self.id], timeout)
        await self.arefresh()
        return self._outcome()

    async def wait_progress_async(self, timeout: float | None = None) -> Any:
        """Async twin of `wait_progress()`."""
        rows = self._app._awatch_progress(self.id, self.progress_at, timeout)
        async with contextlib.aclosing(rows):
            self._load(await anext(rows))
        return self.progress

    async def aprogress(self, timeout: float | None = None) -> AsyncIterator[Any]:
        """Async twin of `progress_updates()`.

        >>> async for progress in job.aprogress():
        ...     await websocket.send_json(progress)
        """
        seen = None
        rows = self._app._awatch_progress(self.id, None, timeout)
        async with contextlib.aclosing(rows):
            async for row in rows:
                self._load(row)
                if self.progress_at is not None and self.progress_at != seen:
                    seen = self.progress_at
                    yield self.progress

    # -----------------------------------------------------------------------------------

    def _outcome(self) -> Any:
        if self.status is JobStatus.SUCCEEDED:
            return self.result
        error = self.error or {}
        failure = JobCancelled if self.status is JobStatus.CANCELLED else JobFailed
        raise failure(
            job_id=self.id,
            task_name=self.task_name,
            exc_type=str(error.get("type", "Unknown")),
            exc_message=str(error.get("message", "")),
            traceback=error.get("traceback"),
            status=self.status.value,
        )
