"""Fleet-wide limits on tasks: a rate, a concurrency and a concurrency per key.

- `pgqueue_limits`: one row per limited task, written from the tasks' declarations when a
  worker starts; a rate keeps on it the start times of the jobs it let start in the last period.
- `limited` on `pgqueue_jobs`: true for a job of a limited task (set at enqueue), NULL for every
  other job, which the claim of plain jobs takes as before.
- `concurrency_key` on both job tables: the key a per-key limit counts the job under.
- Two partial indexes that hold only limited jobs: the queued ones, by task, for their claim,
  and the running ones, by task and key, which the claim counts.
- The claimable index leaves limited jobs out (`AND limited IS NULL`), so that a backlog of
  them costs the claim of other jobs nothing: it is built again with that condition. Workers
  of the previous release, whose claim does not say `limited IS NULL`, cannot use it: roll
  them soon after migrating (their claims read the table until then).

The columns have no default, so adding them rewrites neither table; the new indexes hold no
row until a limited job is enqueued.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

OLD_COLUMNS = (
    "id, queue, task_name, args, kwargs, status, priority, run_at, attempts, max_attempts, "
    "worker_id, result, error, created_at, started_at, finished_at, periodic_name, "
    "periodic_fire_at, expires_at, cancel_requested_at, history, headers, unique_key, progress, "
    "progress_at"
)
NEW_COLUMNS = OLD_COLUMNS + ", concurrency_key"


def _view(columns: str) -> None:
    op.execute("DROP VIEW pgqueue_all_jobs")
    op.execute(
        f"CREATE VIEW pgqueue_all_jobs AS SELECT {columns} FROM pgqueue_jobs"
        f" UNION ALL SELECT {columns} FROM pgqueue_finished_jobs"
    )


def upgrade() -> None:
    op.create_table(
        "pgqueue_limits",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("rate", sa.Integer, nullable=True),
        sa.Column("per_seconds", sa.Integer, nullable=True),
        sa.Column("concurrency", sa.Integer, nullable=True),
        sa.Column("key_concurrency", sa.Integer, nullable=True),
        sa.Column("recent", pg.ARRAY(sa.DateTime(timezone=True)), nullable=True),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.add_column("pgqueue_jobs", sa.Column("limited", sa.Boolean, nullable=True))
    op.add_column("pgqueue_jobs", sa.Column("concurrency_key", sa.Text, nullable=True))
    op.add_column("pgqueue_finished_jobs", sa.Column("concurrency_key", sa.Text, nullable=True))
    op.create_index(
        "pgqueue_jobs_limited_idx",
        "pgqueue_jobs",
        ["task_name", sa.text("priority DESC"), "run_at", "id"],
        postgresql_where=sa.text("status = 'queued' AND limited"),
    )
    op.create_index(
        "pgqueue_jobs_limited_running_idx",
        "pgqueue_jobs",
        ["task_name", "concurrency_key"],
        postgresql_where=sa.text("status = 'running' AND limited"),
    )
    _claimable_index("status = 'queued' AND limited IS NULL")
    _view(NEW_COLUMNS)


def _claimable_index(where: str) -> None:
    op.drop_index("pgqueue_jobs_claimable_idx", table_name="pgqueue_jobs")
    op.create_index(
        "pgqueue_jobs_claimable_idx",
        "pgqueue_jobs",
        ["queue", sa.text("priority DESC"), "run_at", "id"],
        postgresql_where=sa.text(where),
    )


def downgrade() -> None:
    _view(OLD_COLUMNS)
    _claimable_index("status = 'queued'")
    op.drop_index("pgqueue_jobs_limited_running_idx", table_name="pgqueue_jobs")
    op.drop_index("pgqueue_jobs_limited_idx", table_name="pgqueue_jobs")
    op.drop_column("pgqueue_finished_jobs", "concurrency_key")
    op.drop_column("pgqueue_jobs", "concurrency_key")
    op.drop_column("pgqueue_jobs", "limited")
    op.drop_table("pgqueue_limits")
