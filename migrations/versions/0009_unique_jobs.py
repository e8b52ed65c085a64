"""Unique jobs: a key that at most one queued or running job holds, and periods that outlive a job.

`unique_key` on both job tables: NULL for a job without one (most jobs: no default, so adding
it rewrites neither table). A partial unique index over the hot table makes a key held by one
queued or running job at most; an enqueue that meets it (INSERT ... ON CONFLICT) returns the
job that holds it instead of inserting. A job that ends moves to `pgqueue_finished_jobs` with
its key, which frees the key.

`pgqueue_unique_periods` holds `unique_for=`: one row per key, naming the job that holds the
key until `until`, whatever becomes of that job (it may end and move tables meanwhile: the row
stays). Its primary key serialises enqueuers of one key.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

OLD_COLUMNS = (
    "id, queue, task_name, args, kwargs, status, priority, run_at, attempts, max_attempts, "
    "worker_id, result, error, created_at, started_at, finished_at, periodic_name, "
    "periodic_fire_at, expires_at, cancel_requested_at, history, headers"
)
NEW_COLUMNS = OLD_COLUMNS + ", unique_key"


def _view(columns: str) -> None:
    op.execute("DROP VIEW pgqueue_all_jobs")
    op.execute(
        f"CREATE VIEW pgqueue_all_jobs AS SELECT {columns} FROM pgqueue_jobs"
        f" UNION ALL SELECT {columns} FROM pgqueue_finished_jobs"
    )


def upgrade() -> None:
    op.add_column("pgqueue_jobs", sa.Column("unique_key", sa.Text, nullable=True))
    op.add_column("pgqueue_finished_jobs", sa.Column("unique_key", sa.Text, nullable=True))
    # Every existing row has no key: the build reads the table once and indexes nothing.
    op.create_index(
        "pgqueue_jobs_unique_key_idx",
        "pgqueue_jobs",
        ["unique_key"],
        unique=True,
        postgresql_where=sa.text("unique_key IS NOT NULL AND status IN ('queued', 'running')"),
    )
    op.create_table(
        "pgqueue_unique_periods",
        sa.Column("unique_key", sa.Text, nullable=False),
        sa.Column("job_id", sa.BigInteger, nullable=True),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("unique_key", name="pgqueue_unique_periods_pkey"),
    )
    op.create_index("pgqueue_unique_periods_until_idx", "pgqueue_unique_periods", ["until"])
    _view(NEW_COLUMNS)


def downgrade() -> None:
    _view(OLD_COLUMNS)
    op.drop_index("pgqueue_unique_periods_until_idx", table_name="pgqueue_unique_periods")
    op.drop_table("pgqueue_unique_periods")
    op.drop_index("pgqueue_jobs_unique_key_idx", table_name="pgqueue_jobs")
    op.drop_column("pgqueue_finished_jobs", "unique_key")
    op.drop_column("pgqueue_jobs", "unique_key")
