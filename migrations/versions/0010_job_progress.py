"""Job progress: what a running task publishes about itself for a UI to follow.

`progress` on both job tables: a small JSON value set by the task while it runs
(`current_job().set_progress(...)`), written by its worker at most every few hundred
milliseconds under the claim's lease, and `progress_at`, when the value now stored was
written (database clock; what waiters compare to see a new value). Both NULL for a job that
never published any, which is most jobs: the columns have no default, so adding them rewrites
neither table. They move with the job to `pgqueue_finished_jobs` (the last value of the
last attempt is kept); a retry or a rescue clears them (the next attempt starts afresh).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

OLD_COLUMNS = (
    "id, queue, task_name, args, kwargs, status, priority, run_at, attempts, max_attempts, "
    "worker_id, result, error, created_at, started_at, finished_at, periodic_name, "
    "periodic_fire_at, expires_at, cancel_requested_at, history, headers, unique_key"
)
NEW_COLUMNS = OLD_COLUMNS + ", progress, progress_at"


def _view(columns: str) -> None:
    op.execute("DROP VIEW pgqueue_all_jobs")
    op.execute(
        f"CREATE VIEW pgqueue_all_jobs AS SELECT {columns} FROM pgqueue_jobs"
        f" UNION ALL SELECT {columns} FROM pgqueue_finished_jobs"
    )


def upgrade() -> None:
    for table in ("pgqueue_jobs", "pgqueue_finished_jobs"):
        op.add_column(table, sa.Column("progress", pg.JSONB, nullable=True))
        op.add_column(table, sa.Column("progress_at", sa.DateTime(timezone=True), nullable=True))
    _view(NEW_COLUMNS)


def downgrade() -> None:
    _view(OLD_COLUMNS)
    for table in ("pgqueue_finished_jobs", "pgqueue_jobs"):
        op.drop_column(table, "progress_at")
        op.drop_column(table, "progress")
