"""Finished jobs leave the hot table; one row per periodic tick; autovacuum for the hot table.

`pgqueue_jobs` keeps only queued and running jobs, so claims, vacuum and its indexes stay
small however many results are kept; ended jobs move to `pgqueue_finished_jobs` in the
statement that ends them. `pgqueue_all_jobs` shows both.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = (
    "id, queue, task_name, args, kwargs, status, priority, run_at, attempts, max_attempts, "
    "worker_id, result, error, created_at, started_at, finished_at, periodic_name, "
    "periodic_fire_at, expires_at, cancel_requested_at"
)
HOT_TABLE_STORAGE = (
    "autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 500, "
    "autovacuum_vacuum_insert_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02, "
    "autovacuum_vacuum_cost_delay = 0"
)


def upgrade() -> None:
    status = pg.ENUM(name="pgqueue_job_status", create_type=False)
    op.create_table(
        "pgqueue_finished_jobs",
        sa.Column("id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("queue", sa.Text, nullable=False),
        sa.Column("task_name", sa.Text, nullable=False),
        sa.Column("args", pg.JSONB, nullable=False),
        sa.Column("kwargs", pg.JSONB, nullable=False),
        sa.Column("status", status, nullable=False),
        sa.Column("priority", sa.SmallInteger, nullable=False),
        sa.Column("run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("worker_id", sa.Integer, nullable=True),
        sa.Column("result", pg.JSONB, nullable=True),
        sa.Column("error", pg.JSONB, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("periodic_name", sa.Text, nullable=True),
        sa.Column("periodic_fire_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pgqueue_finished_jobs_pkey"),
        sa.CheckConstraint(
            "status IN ('succeeded', 'failed', 'cancelled')",
            name="pgqueue_finished_jobs_status_check",
        ),
    )
    op.create_index("pgqueue_finished_jobs_finished_idx", "pgqueue_finished_jobs", ["finished_at"])
    op.create_table(
        "pgqueue_periodic_ticks",
        sa.Column("periodic_name", sa.Text, nullable=False),
        sa.Column("fire_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("job_id", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("periodic_name", "fire_at", name="pgqueue_periodic_ticks_pkey"),
    )
    op.execute(
        "INSERT INTO pgqueue_periodic_ticks (periodic_name, fire_at, job_id)"
        " SELECT periodic_name, periodic_fire_at, id FROM pgqueue_jobs"
        " WHERE periodic_name IS NOT NULL AND periodic_fire_at IS NOT NULL"
    )
    op.execute(
        f"WITH ended AS (DELETE FROM pgqueue_jobs WHERE status NOT IN ('queued', 'running')"
        f" RETURNING {COLUMNS})"
        f" INSERT INTO pgqueue_finished_jobs ({COLUMNS})"
        f" SELECT {COLUMNS.replace('finished_at', 'COALESCE(finished_at, now())')} FROM ended"
    )
    op.drop_index("pgqueue_jobs_periodic_tick_key", table_name="pgqueue_jobs")
    op.drop_index("pgqueue_jobs_finished_idx", table_name="pgqueue_jobs")
    op.execute(f"ALTER TABLE pgqueue_jobs SET ({HOT_TABLE_STORAGE})")
    op.execute(
        f"CREATE VIEW pgqueue_all_jobs AS SELECT {COLUMNS} FROM pgqueue_jobs"
        f" UNION ALL SELECT {COLUMNS} FROM pgqueue_finished_jobs"
    )


def downgrade() -> None:
    op.execute("DROP VIEW pgqueue_all_jobs")
    op.execute(
        "ALTER TABLE pgqueue_jobs RESET (autovacuum_vacuum_scale_factor,"
        " autovacuum_vacuum_threshold, autovacuum_vacuum_insert_scale_factor,"
        " autovacuum_analyze_scale_factor, autovacuum_vacuum_cost_delay)"
    )
    op.execute(f"INSERT INTO pgqueue_jobs ({COLUMNS}) SELECT {COLUMNS} FROM pgqueue_finished_jobs")
    op.create_index(
        "pgqueue_jobs_finished_idx",
        "pgqueue_jobs",
        ["finished_at"],
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    )
    op.create_index(
        "pgqueue_jobs_periodic_tick_key",
        "pgqueue_jobs",
        ["periodic_name", "periodic_fire_at"],
        unique=True,
        postgresql_where=sa.text("periodic_name IS NOT NULL"),
    )
    op.drop_table("pgqueue_periodic_ticks")
    op.drop_index("pgqueue_finished_jobs_finished_idx", table_name="pgqueue_finished_jobs")
    op.drop_table("pgqueue_finished_jobs")
