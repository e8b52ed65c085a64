"""Workflows: steps that wait for other jobs, released in the transaction that ends the last one.

- `pgqueue_job_status` gains 'waiting': a step whose parents have not all ended. No claim, no
  expiry sweep and no rescue reads such a row; it becomes 'queued' when it is released.
- `workflow_id` on both job tables (NULL for a job outside any workflow, which is most jobs:
  no default, no rewrite) and `waiting_for` on `pgqueue_jobs` (how many parents a waiting step
  still waits for).
- `pgqueue_workflows` (one row per workflow: its shape, for `pgqueue workflows show`),
  `pgqueue_workflow_steps` (one row per step: what it takes from its parents and its delay)
  and `pgqueue_dependencies` (parent -> child edges still to be resolved).
- The trigger `pgqueue_workflow_step_ended`, AFTER DELETE on `pgqueue_jobs` for rows with a
  `workflow_id`: every statement that ends a job moves it from there to
  `pgqueue_finished_jobs` (a completion, a cancellation, a rescue that ends it FAILED, an
  expiry, a cancelled claim), so whichever ends a step resolves its edges in its own
  transaction. A job outside any workflow does not fire it.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

OLD_COLUMNS = (
    "id, queue, task_name, args, kwargs, status, priority, run_at, attempts, max_attempts, "
    "worker_id, result, error, created_at, started_at, finished_at, periodic_name, "
    "periodic_fire_at, expires_at, cancel_requested_at, history, headers, unique_key, progress, "
    "progress_at, concurrency_key"
)
NEW_COLUMNS = OLD_COLUMNS + ", workflow_id"

# How a job's row moves to pgqueue_finished_jobs when the trigger ends it (CANCELLED).
ARCHIVED = """
    INSERT INTO pgqueue_finished_jobs (
        id, queue, task_name, args, kwargs, status, priority, run_at, attempts, max_attempts,
        worker_id, result, error, created_at, started_at, finished_at, periodic_name,
        periodic_fire_at, expires_at, cancel_requested_at, history, headers, workflow_id)
    SELECT e.id, e.queue, e.task_name, e.args, e.kwargs, 'cancelled', e.priority, e.run_at,
        e.attempts, e.max_attempts, e.worker_id, NULL, {error}, e.created_at, e.started_at,
        now(), e.periodic_name, e.periodic_fire_at, e.expires_at, e.cancel_requested_at,
        e.history, e.headers, e.workflow_id
    FROM ended AS e
    RETURNING id"""

# Release a waiting step: queued, its parents' value prepended to its arguments (unless it
# is immutable), due after its delay; workers are told where it sorts.
RELEASE_STEP = """
CREATE FUNCTION pgqueue_release_step(step_id bigint, prefix jsonb) RETURNS void
LANGUAGE plpgsql SET jit = off AS $$
DECLARE
    released record;
BEGIN
    UPDATE pgqueue_jobs AS j
    SET status = 'queued', waiting_for = NULL,
        args = CASE WHEN s.takes_result THEN prefix || j.args ELSE j.args END,
        run_at = GREATEST(COALESCE(s.eta, now()), now() + s.delay * interval '1 second')
    FROM pgqueue_workflow_steps AS s
    WHERE j.id = step_id AND s.job_id = step_id AND j.status = 'waiting'
    RETURNING j.queue, j.run_at, j.priority INTO released;
    IF FOUND THEN
        PERFORM pg_notify('pgqueue_enqueued',
            released.queue || '@' || extract(epoch FROM released.run_at)::text || '@'
            || released.priority
            || CASE WHEN released.run_at > now() THEN '@later' ELSE '' END);
    END IF;
    DELETE FROM pgqueue_dependencies WHERE child_id = step_id;
END $$
"""

# End a waiting step CANCELLED, and every waiting step that depends on it for its success,
# with `error`; their waiters are told. Each one moved to pgqueue_finished_jobs fires the
# trigger in turn, which releases the workflow's link_error callback if nothing did yet.
CANCEL_STEPS = f"""
CREATE FUNCTION pgqueue_cancel_steps(first_step bigint, reason jsonb) RETURNS void
LANGUAGE plpgsql SET jit = off AS $$
DECLARE
    ended_ids text;
BEGIN
    WITH RECURSIVE below(id) AS (
        SELECT first_step
        UNION
        SELECT d.child_id FROM pgqueue_dependencies AS d JOIN below AS b ON d.parent_id = b.id
        WHERE d.kind <> 'error'
    ), ended AS (
        DELETE FROM pgqueue_jobs AS j
        WHERE j.id = ANY(ARRAY(SELECT id FROM below)) AND j.status = 'waiting'
        RETURNING j.*
    ), archived AS ({ARCHIVED.format(error="reason")}
    )
    SELECT string_agg(id::text, ',') INTO ended_ids FROM archived;
    IF ended_ids IS NOT NULL THEN
        PERFORM pg_notify('pgqueue_finished', ended_ids);
    END IF;
END $$
"""

# Each function runs without JIT: the workers' sessions plan with sequential scans and sorts
# disabled (pgqueue._connection.HOT_PATH_SETTINGS), which makes any plan that still needs one
# look costly enough to compile, 25 ms per statement for microseconds of work.
#
# Resolve the edges of a workflow step that just ended (OLD: its row deleted from
# pgqueue_jobs; how it ended: its row in pgqueue_finished_jobs). Edges to the link_error
# callback first, so that the step that failed, not one cancelled because of it, is the one
# the callback hears about. A waiting child is
# locked by the UPDATE that counts its parents down: of several parents ending at once, in
# different transactions, exactly one sees the count reach zero, and it reads the others'
# results after their commit (each statement of this function takes a fresh snapshot).
STEP_ENDED = """
CREATE FUNCTION pgqueue_workflow_step_ended() RETURNS trigger
LANGUAGE plpgsql SET jit = off AS $$
DECLARE
    ended record;
    edge record;
    remaining int;
    value jsonb;
BEGIN
    -- How it ended: the row the same statement moved to pgqueue_finished_jobs.
    SELECT id, task_name, status, result, error INTO ended
    FROM pgqueue_finished_jobs WHERE id = OLD.id;
    IF NOT FOUND THEN
        RETURN NULL;  -- removed without ending (a downgrade): nothing to resolve
    END IF;
    -- What it waited for no longer matters (a step cancelled while waiting, a callback).
    DELETE FROM pgqueue_dependencies WHERE child_id = OLD.id;
    -- The link_error callback's edge first, then the others; each in child order, read in
    -- the primary key's order (no sort: workers' sessions plan without sorts).
    FOR edge IN
        (SELECT child_id, kind FROM pgqueue_dependencies
         WHERE parent_id = OLD.id AND kind = 'error' ORDER BY parent_id, child_id)
        UNION ALL
        (SELECT child_id, kind FROM pgqueue_dependencies
         WHERE parent_id = OLD.id AND kind <> 'error' ORDER BY parent_id, child_id)
    LOOP
        IF edge.kind = 'error' AND ended.status <> 'succeeded' THEN
            PERFORM pgqueue_release_step(
                edge.child_id, jsonb_build_array(ended.id, COALESCE(ended.error, 'null'::jsonb)));
        ELSIF ended.status <> 'succeeded' THEN
            PERFORM pgqueue_cancel_steps(edge.child_id, jsonb_build_object(
                'type', 'DependencyFailed',
                'message', format('step %s (%s) %s: %s: %s', ended.id, ended.task_name,
                    CASE WHEN ended.status = 'failed' THEN 'failed' ELSE 'was cancelled' END,
                    COALESCE(ended.error ->> 'type', 'Unknown'),
                    COALESCE(ended.error ->> 'message', '')),
                'traceback', NULL,
                'failed_job_id', ended.id));
        ELSE
            UPDATE pgqueue_jobs SET waiting_for = waiting_for - 1
            WHERE id = edge.child_id AND status = 'waiting'
            RETURNING waiting_for INTO remaining;
            IF FOUND AND remaining <= 0 THEN
                IF edge.kind = 'error' THEN
                    -- Every step succeeded: the link_error callback is not needed.
                    PERFORM pgqueue_cancel_steps(edge.child_id, jsonb_build_object(
                        'type', 'NotNeeded',
                        'message', format('workflow %s succeeded: its link_error callback '
                            'does not run', OLD.workflow_id),
                        'traceback', NULL));
                ELSIF edge.kind = 'result' THEN
                    PERFORM pgqueue_release_step(
                        edge.child_id, jsonb_build_array(COALESCE(ended.result, 'null'::jsonb)));
                ELSE
                    SELECT jsonb_build_array(
                        jsonb_agg(COALESCE(f.result, 'null'::jsonb) ORDER BY d.position))
                    INTO value
                    FROM pgqueue_dependencies AS d
                    LEFT JOIN pgqueue_finished_jobs AS f ON f.id = d.parent_id
                    WHERE d.child_id = edge.child_id AND d.kind = 'results';
                    PERFORM pgqueue_release_step(edge.child_id, value);
                END IF;
            END IF;
        END IF;
    END LOOP;
    RETURN NULL;
END $$
"""

# On the hot table's DELETE, which every statement that ends a job runs (moving the row to
# pgqueue_finished_jobs in the same statement): its AFTER trigger runs once the statement has
# written the finished row, and it sees the workflow on the deleted row itself, so a worker of
# an older pgqueue, whose statements do not copy `workflow_id`, still resolves the steps it ends.
TRIGGER = """
CREATE TRIGGER pgqueue_workflow_step_ended
AFTER DELETE ON pgqueue_jobs
FOR EACH ROW WHEN (OLD.workflow_id IS NOT NULL)
EXECUTE FUNCTION pgqueue_workflow_step_ended()
"""


def _view(columns: str) -> None:
    op.execute("DROP VIEW pgqueue_all_jobs")
    op.execute(
        f"CREATE VIEW pgqueue_all_jobs AS SELECT {columns} FROM pgqueue_jobs"
        f" UNION ALL SELECT {columns} FROM pgqueue_finished_jobs"
    )


def upgrade() -> None:
    # PostgreSQL 12 and later add an enum value inside a transaction; the value is used only
    # by later transactions (nothing below names it outside a function body).
    op.execute("ALTER TYPE pgqueue_job_status ADD VALUE IF NOT EXISTS 'waiting' BEFORE 'queued'")
    op.add_column("pgqueue_jobs", sa.Column("workflow_id", sa.BigInteger, nullable=True))
    op.add_column("pgqueue_jobs", sa.Column("waiting_for", sa.Integer, nullable=True))
    op.add_column("pgqueue_finished_jobs", sa.Column("workflow_id", sa.BigInteger, nullable=True))
    _view(NEW_COLUMNS)
    op.create_table(
        "pgqueue_workflows",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("tree", pg.JSONB, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index("pgqueue_workflows_created_idx", "pgqueue_workflows", ["created_at"])
    op.create_table(
        "pgqueue_workflow_steps",
        sa.Column("job_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("workflow_id", sa.BigInteger, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("takes_result", sa.Boolean, nullable=False),
        sa.Column("delay", sa.Float, nullable=False, server_default="0"),
        sa.Column("eta", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "role IN ('step', 'link_error')", name="pgqueue_workflow_steps_role_check"
        ),
    )
    op.create_index(
        "pgqueue_workflow_steps_workflow_idx", "pgqueue_workflow_steps", ["workflow_id", "job_id"]
    )
    op.create_table(
        "pgqueue_dependencies",
        sa.Column("parent_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("child_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("position", sa.Integer, nullable=False, server_default="0"),
        sa.CheckConstraint(
            "kind IN ('result', 'results', 'error')", name="pgqueue_dependencies_kind_check"
        ),
    )
    op.create_index("pgqueue_dependencies_child_idx", "pgqueue_dependencies", ["child_id"])
    op.execute(RELEASE_STEP)
    op.execute(CANCEL_STEPS)
    op.execute(STEP_ENDED)
    op.execute(TRIGGER)


def downgrade() -> None:
    # PostgreSQL cannot remove a value from an enum: 'waiting' stays, unused, once no job has
    # it (the dropped columns take the workflows with them).
    op.execute("DROP TRIGGER pgqueue_workflow_step_ended ON pgqueue_jobs")
    op.execute("DROP FUNCTION pgqueue_workflow_step_ended()")
    op.execute("DROP FUNCTION pgqueue_cancel_steps(bigint, jsonb)")
    op.execute("DROP FUNCTION pgqueue_release_step(bigint, jsonb)")
    op.execute("DELETE FROM pgqueue_jobs WHERE status = 'waiting'")
    op.drop_table("pgqueue_dependencies")
    op.drop_table("pgqueue_workflow_steps")
    op.drop_table("pgqueue_workflows")
    _view(OLD_COLUMNS)
    op.drop_column("pgqueue_finished_jobs", "workflow_id")
    op.drop_column("pgqueue_jobs", "waiting_for")
    op.drop_column("pgqueue_jobs", "workflow_id")
