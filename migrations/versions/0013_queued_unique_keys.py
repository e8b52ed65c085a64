"""Unique while queued: a key that at most one queued job holds, while jobs of it may run.

`queued_key` on both job tables: the key of a job enqueued with `unique_states=("queued",)`,
NULL for every other job (no default: adding it rewrites neither table). Such a job has no
`unique_key`, so the index of keys held by queued or running jobs (migration 0009) is left
as it is, and a pgqueue that predates this column keeps working against it. A partial unique
index holds the queued jobs' keys: an enqueue that meets it (INSERT ... ON CONFLICT) returns
the queued job instead of inserting, and the claim, which makes a job running, takes the job
out of it, so the next enqueue of the key inserts a new one. A job that goes back to queued (a
retry, a rescue, an operator's retry) keeps its key only when no queued job holds it.

The key moves with the job to `pgqueue_finished_jobs`, for the record and for an operator's
retry. The workflow trigger functions of migration 0012 need not carry it: they only end
waiting workflow steps, which never have a key.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

OLD_COLUMNS = (
    "id, queue, task_name, args, kwargs, status, priority, run_at, attempts, max_attempts, "
    "worker_id, result, error, created_at, started_at, finished_at, periodic_name, "
    "periodic_fire_at, expires_at, cancel_requested_at, history, headers, unique_key, progress, "
    "progress_at, concurrency_key, workflow_id"
)
NEW_COLUMNS = OLD_COLUMNS + ", queued_key"


def _view(columns: str) -> None:
    op.execute("DROP VIEW pgqueue_all_jobs")
    op.execute(
        f"CREATE VIEW pgqueue_all_jobs AS SELECT {columns} FROM pgqueue_jobs"
        f" UNION ALL SELECT {columns} FROM pgqueue_finished_jobs"
    )


def upgrade() -> None:
    op.add_column("pgqueue_jobs", sa.Column("queued_key", sa.Text, nullable=True))
    op.add_column("pgqueue_finished_jobs", sa.Column("queued_key", sa.Text, nullable=True))
    # Every existing row has no such key: the build reads the table once and indexes nothing.
    op.create_index(
        "pgqueue_jobs_queued_key_idx",
        "pgqueue_jobs",
        ["queued_key"],
        unique=True,
        postgresql_where=sa.text("queued_key IS NOT NULL AND status = 'queued'"),
    )
    _view(NEW_COLUMNS)


def downgrade() -> None:
    _view(OLD_COLUMNS)
    op.drop_index("pgqueue_jobs_queued_key_idx", table_name="pgqueue_jobs")
    op.drop_column("pgqueue_finished_jobs", "queued_key")
    op.drop_column("pgqueue_jobs", "queued_key")
