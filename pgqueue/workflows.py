"""Workflows: writing a compiled canvas (pgqueue.canvas) as jobs, and the `Workflow` handle.

A workflow is written in one transaction (pgqueue's own, or the caller's with `connection=`):
its steps are jobs with its `workflow_id`; a step without parents is queued, the others wait
(status 'waiting', never claimed) and hold a count of the parents they wait for. Nothing
polls: when a step ends, whatever ends it (a worker's outcome, a cancellation, a rescue that
ends it FAILED, an expiry), the statement that moves its row to `pgqueue_finished_jobs` fires
a trigger that, in that same transaction, counts its children down under their row locks and
releases each one whose count reaches zero (exactly one of several parents ending at once
sees that), or, when it failed or was cancelled, ends its dependents CANCELLED naming it, and
releases the workflow's link_error callback once (migration 0012 holds the trigger).

>>> flow = pgqueue.chord([fetch.s(u) for u in urls], merge.s()).apply_async()
>>> flow.wait(timeout=60)       # merge's result, or JobFailed naming the step that failed
>>> app.get_workflow(flow.id).status
<WorkflowStatus.SUCCEEDED: 'succeeded'>
"""

from __future__ import annotations

import contextlib
import enum
import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row, tuple_row

from pgqueue import queries
from pgqueue.canvas import Canvas, Plan, compile_workflow
from pgqueue.enqueue import (
    PSYCOPG,
    _raise_from_sqlalchemy,
    connection_kind,
    translate_error,
)
from pgqueue.errors import ConfigurationError, JobCancelled, JobFailed, WorkflowNotFound
from pgqueue.hooks import Enqueueing, around_enqueue
from pgqueue.job import Job, JobStatus

if TYPE_CHECKING:
    from pgqueue.app import App


class WorkflowStatus(str, enum.Enum):
    """Where a workflow is, read from its steps: pending (no step started yet), running,
    succeeded (every step), failed (a step failed for good), cancelled (a step was cancelled,
    none failed)."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


class Workflow:
    """A handle on one workflow: `id`, `status`, `jobs` (its steps, parents before children),
    `link_error_jobs` (its link_error callbacks), `tree` (its shape, with job ids).

    A snapshot: `refresh()` reads it again; `wait()` blocks until every step has ended.
    """

    def __init__(
        self,
        app: App,
        workflow_id: int,
        tree: dict[str, Any],
        rows: Sequence[dict[str, Any]],
        created_at: datetime | None = None,
    ) -> None:
        self._app = app
        self.id = workflow_id
        self.tree = tree
        self.created_at = created_at
        self._load(rows)

    def _load(self, rows: Sequence[dict[str, Any]]) -> None:
        self.jobs: list[Job] = [Job(self._app, r) for r in rows if r.get("role") == "step"]
        self.link_error_jobs: list[Job] = [
            Job(self._app, r) for r in rows if r.get("role") == "link_error"
        ]

    def __repr__(self) -> str:
        return f"<Workflow {self.id} {self.status.value} steps={len(self.jobs)}>"

    @property
    def status(self) -> WorkflowStatus:
        statuses = {job.status for job in self.jobs}
        if JobStatus.FAILED in statuses:
            return WorkflowStatus.FAILED
        if JobStatus.CANCELLED in statuses:
            return WorkflowStatus.CANCELLED
        if statuses == {JobStatus.SUCCEEDED}:
            return WorkflowStatus.SUCCEEDED
        if statuses <= {JobStatus.QUEUED, JobStatus.WAITING}:
            return WorkflowStatus.PENDING
        return WorkflowStatus.RUNNING

    @property
    def output_ids(self) -> list[int]:
        """The steps whose results are the workflow's result."""
        return [int(i) for i in self.tree.get("output", [])]

    def job(self, job_id: int) -> Job:
        """The step (or link_error callback) with this job id."""
        for job in (*self.jobs, *self.link_error_jobs):
            if job.id == job_id:
                return job
        raise KeyError(f"job {job_id} is not a step of workflow {self.id}")

    # -- sync ---------------------------------------------------------------------------

    def refresh(self) -> Workflow:
        """Read the workflow's steps again; returns self."""
        _, rows = _fetch(self._app, self.id)
        self._load(rows)
        return self

    def wait(self, timeout: float | None = None) -> Any:
        """Block until every step has ended and return the workflow's result: its last step's
        (a list, in order, when it ends with a group). Raises `pgqueue.JobFailed` naming the
        step that failed (the first one), `pgqueue.JobCancelled` if a step was cancelled, and
        `TimeoutError` after `timeout` seconds."""
        self._app._wait_for_jobs([job.id for job in self.jobs], timeout)
        self.refresh()
        return self._outcome()

    def cancel(self, reason: str = "workflow cancelled") -> int:
        """Cancel every step that has not started (it ends CANCELLED and never starts) and ask
        the running ones to stop; the link_error callback, if any, runs once. Returns how many
        steps this ended or asked to stop."""
        conn = self._app._shared_connection()
        try:
            rows = conn.execute(
                queries.CANCEL_WORKFLOW, {"id": self.id, "message": reason}
            ).fetchall()
        except psycopg.Error as exc:
            raise translate_error(exc, conn, owned=True) from exc
        self.refresh()
        return len(rows)

    # -- async --------------------------------------------------------------------------

    async def arefresh(self) -> Workflow:
        """Async twin of `refresh()`."""
        _, rows = await _afetch(self._app, self.id)
        self._load(rows)
        return self

    async def wait_async(self, timeout: float | None = None) -> Any:
        """Async twin of `wait()`."""
        await self._app._await_jobs([job.id for job in self.jobs], timeout)
        await self.arefresh()
        return self._outcome()

    async def acancel(self, reason: str = "workflow cancelled") -> int:
        """Async twin of `cancel()`."""
        conn = await self._app._ashared_connection()
        try:
            cur = await conn.execute(queries.CANCEL_WORKFLOW, {"id": self.id, "message": reason})
            rows = await cur.fetchall()
        except psycopg.Error as exc:
            raise translate_error(exc, conn, owned=True) from exc
        await self.arefresh()
        return len(rows)

    # -----------------------------------------------------------------------------------

    def _outcome(self) -> Any:
        failed = [job for job in self.jobs if job.status is JobStatus.FAILED]
        cancelled = [job for job in self.jobs if job.status is JobStatus.CANCELLED]
        # The step that failed, not the dependents cancelled because of it.
        first = _first_ended(failed) or _first_ended(
            [j for j in cancelled if (j.error or {}).get("type") != "DependencyFailed"] or cancelled
        )
        if first is not None:
            error = first.error or {}
            failure = JobFailed if first.status is JobStatus.FAILED else JobCancelled
            raise failure(
                job_id=first.id,
                task_name=first.task_name,
                exc_type=str(error.get("type", "Unknown")),
                exc_message=str(error.get("message", "")),
                traceback=error.get("traceback"),
                status=first.status.value,
            )
        results = [self.job(job_id).result for job_id in self.output_ids]
        return results if self.tree.get("many") else results[0]


def _first_ended(jobs: list[Job]) -> Job | None:
    if not jobs:
        return None
    return min(jobs, key=lambda j: (j.finished_at is None, j.finished_at or 0, j.id))


# -- reading --------------------------------------------------------------------------------


def get_workflow(app: App, workflow_id: int) -> Workflow:
    """`app.get_workflow(id)`; WorkflowNotFound if there is none."""
    head, rows = _fetch(app, workflow_id)
    return Workflow(app, workflow_id, head["tree"], rows, head["created_at"])


async def aget_workflow(app: App, workflow_id: int) -> Workflow:
    """Async twin of `get_workflow()`."""
    head, rows = await _afetch(app, workflow_id)
    return Workflow(app, workflow_id, head["tree"], rows, head["created_at"])


def _fetch(app: App, workflow_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    conn = app._shared_connection()
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            head = cur.execute(queries.FETCH_WORKFLOW, {"id": workflow_id}).fetchone()
            rows = cur.execute(queries.WORKFLOW_JOBS, {"id": workflow_id}).fetchall()
    except psycopg.Error as exc:
        raise translate_error(exc, conn, owned=True) from exc
    return _found(workflow_id, head), rows


async def _afetch(app: App, workflow_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    conn = await app._ashared_connection()
    try:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(queries.FETCH_WORKFLOW, {"id": workflow_id})
            head = await cur.fetchone()
            await cur.execute(queries.WORKFLOW_JOBS, {"id": workflow_id})
            rows = await cur.fetchall()
    except psycopg.Error as exc:
        raise translate_error(exc, conn, owned=True) from exc
    return _found(workflow_id, head), rows


def _found(workflow_id: int, head: dict[str, Any] | None) -> dict[str, Any]:
    if head is None:
        raise WorkflowNotFound(
            f"no workflow with id {workflow_id} (one enqueued with connection= exists only "
            "once that transaction commits)"
        )
    return head


# -- writing --------------------------------------------------------------------------------


def enqueue_workflow(
    app: App,
    node: Canvas,
    connection: Any,
    link: Canvas | Sequence[Canvas] | None,
    link_error: Canvas | Sequence[Canvas] | None,
) -> Workflow:
    """Compile `node` (checking everything) and write it: on `connection` in its current
    transaction, else committed on pgqueue's own connection."""
    plan = _plan(app, node, link, link_error)
    if connection is None:
        connection = app._caller_transaction()
    with _hooks(app, plan, connection is not None) as enqueueings:
        if connection is None:
            conn = app._shared_connection()
            try:
                with conn.transaction():
                    workflow_id, ids, rows = _write(conn, plan)
            except psycopg.Error as exc:
                raise translate_error(exc, conn, owned=True) from exc
        else:
            workflow_id, ids, rows = _write(connection, plan)
        for enqueueing, job_id in zip(enqueueings, ids, strict=False):  # no hooks: none
            enqueueing.job_ids.append(job_id)
    return _new_workflow(app, plan, workflow_id, ids, rows)


async def aenqueue_workflow(
    app: App,
    node: Canvas,
    connection: Any,
    link: Canvas | Sequence[Canvas] | None,
    link_error: Canvas | Sequence[Canvas] | None,
) -> Workflow:
    """Async twin of `enqueue_workflow()`."""
    plan = _plan(app, node, link, link_error)
    with _hooks(app, plan, connection is not None) as enqueueings:
        if connection is None:
            conn = await app._ashared_connection()
            try:
                async with conn.transaction():
                    workflow_id, ids, rows = await _awrite(conn, plan)
            except psycopg.Error as exc:
                raise translate_error(exc, conn, owned=True) from exc
        else:
            workflow_id, ids, rows = await _awrite(connection, plan)
        for enqueueing, job_id in zip(enqueueings, ids, strict=False):  # no hooks: none
            enqueueing.job_ids.append(job_id)
    return _new_workflow(app, plan, workflow_id, ids, rows)


def _plan(
    app: App,
    node: Canvas,
    link: Canvas | Sequence[Canvas] | None,
    link_error: Canvas | Sequence[Canvas] | None,
) -> Plan:
    if app._eager is not None:
        raise ConfigurationError(
            "workflows do not run in eager mode (pgqueue.testing.eager()): test them with a "
            "worker (pgqueue.testing.drain() or a Worker) against a database"
        )
    return compile_workflow(app, node, link, link_error)


@contextlib.contextmanager
def _hooks(app: App, plan: Plan, in_transaction: bool) -> Any:
    """Enter the app's enqueue hooks once per step (each may add headers to its step)."""
    hooks = app._hooks.enqueue_hooks
    enqueueings: list[Enqueueing] = []
    with contextlib.ExitStack() as stack:
        if hooks:
            for step in plan.steps:
                enqueueing, step.request = stack.enter_context(
                    around_enqueue(hooks, step.request, 1, in_transaction)
                )
                enqueueings.append(enqueueing)
        yield enqueueings


def _steps_document(plan: Plan, ids: Sequence[int]) -> str:
    parts = []
    for job_id, step in zip(ids, plan.steps, strict=True):
        r = step.request
        fields = {
            "id": job_id,
            "queue": r.queue,
            "task_name": r.task_name,
            "priority": r.priority,
            "max_attempts": r.max_attempts,
            "waiting_for": step.waiting_for,
            "delay": step.delay if step.waiting_for else (r.countdown or 0.0),
            "eta": (step.eta if step.waiting_for else r.eta),
            "expires_at": r.expires_at,
            "expires_in": r.expires_in,
            "takes_result": step.takes_result,
            "role": step.role,
            "limited": r.limited or None,
            "concurrency_key": r.concurrency_key,
        }
        encoded = json.dumps(
            {k: v.isoformat() if isinstance(v, datetime) else v for k, v in fields.items()}
        )
        raw = f'"args":{r.args_json},"kwargs":{r.kwargs_json},"headers":{r.headers_json or "null"}'
        parts.append(encoded[:-1] + "," + raw + "}")
    return "[" + ",".join(parts) + "]"


def _params(plan: Plan, workflow_id: int, ids: Sequence[int]) -> dict[str, Any]:
    edges = [
        {"parent_id": ids[p], "child_id": ids[c], "kind": kind, "position": position}
        for p, c, kind, position in plan.edges
    ]
    return {
        "workflow_id": workflow_id,
        "tree": plan.tree_json(ids),
        "steps": _steps_document(plan, ids),
        "edges": json.dumps(edges),
    }


def _write(connection: Any, plan: Plan) -> tuple[int, list[int], list[tuple[Any, ...]]]:
    reserved = _execute(connection, queries.RESERVE_WORKFLOW_IDS, {"n": len(plan.steps)})
    workflow_id, ids = int(reserved[0][0]), [int(i) for i in reserved[0][1]]
    rows = _execute(connection, queries.INSERT_WORKFLOW, _params(plan, workflow_id, ids))
    return workflow_id, ids, rows


async def _awrite(connection: Any, plan: Plan) -> tuple[int, list[int], list[tuple[Any, ...]]]:
    reserved = await _aexecute(connection, queries.RESERVE_WORKFLOW_IDS, {"n": len(plan.steps)})
    workflow_id, ids = int(reserved[0][0]), [int(i) for i in reserved[0][1]]
    rows = await _aexecute(connection, queries.INSERT_WORKFLOW, _params(plan, workflow_id, ids))
    return workflow_id, ids, rows


def _execute(connection: Any, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Run a statement on a sync psycopg or SQLAlchemy connection, in its current transaction."""
    if connection_kind(connection, is_async=False) == PSYCOPG:
        try:
            with psycopg.Cursor(connection, row_factory=tuple_row) as cur:
                return cur.execute(sql, params).fetchall()
        except psycopg.Error as exc:
            raise translate_error(exc, connection, owned=False) from exc
    import sqlalchemy as sa

    try:
        result = connection.execute(sa.text(queries.as_sqlalchemy(sql)), params)
        return [tuple(row) for row in result.all()]
    except sa.exc.DBAPIError as exc:
        _raise_from_sqlalchemy(exc)
        raise


async def _aexecute(connection: Any, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Async twin of `_execute`."""
    if connection_kind(connection, is_async=True) == PSYCOPG:
        try:
            async with psycopg.AsyncCursor(connection, row_factory=tuple_row) as cur:
                await cur.execute(sql, params)
                return await cur.fetchall()
        except psycopg.Error as exc:
            raise translate_error(exc, connection, owned=False) from exc
    import sqlalchemy as sa

    try:
        result = await connection.execute(sa.text(queries.as_sqlalchemy(sql)), params)
        return [tuple(row) for row in result.all()]
    except sa.exc.DBAPIError as exc:
        _raise_from_sqlalchemy(exc)
        raise


def _new_workflow(
    app: App, plan: Plan, workflow_id: int, ids: Sequence[int], rows: Sequence[tuple[Any, ...]]
) -> Workflow:
    created = {int(row[0]): row[1] for row in rows}
    job_rows = []
    for job_id, step in zip(ids, plan.steps, strict=True):
        r = step.request
        job_rows.append(
            {
                "id": job_id,
                "queue": r.queue,
                "task_name": r.task_name,
                "status": "waiting" if step.waiting_for else "queued",
                "priority": r.priority,
                "attempts": 0,
                "max_attempts": r.max_attempts,
                "args": json.loads(r.args_json),
                "kwargs": json.loads(r.kwargs_json),
                "created_at": created.get(job_id),
                "headers": json.loads(r.headers_json) if r.headers_json else None,
                "workflow_id": workflow_id,
                "role": step.role,
            }
        )
    tree = json.loads(plan.tree_json(ids))
    return Workflow(app, workflow_id, tree, job_rows, job_rows[0]["created_at"])
