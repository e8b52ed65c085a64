"""Periodic schedules, and one job per (schedule, fire time).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("pgqueue_jobs", sa.Column("periodic_name", sa.Text, nullable=True))
    op.add_column(
        "pgqueue_jobs", sa.Column("periodic_fire_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index(
        "pgqueue_jobs_periodic_tick_key",
        "pgqueue_jobs",
        ["periodic_name", "periodic_fire_at"],
        unique=True,
        postgresql_where=sa.text("periodic_name IS NOT NULL"),
    )
    op.create_table(
        "pgqueue_periodic",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("task_name", sa.Text, nullable=False),
        sa.Column("cron", sa.Text, nullable=True),
        sa.Column("every_seconds", sa.Float, nullable=True),
        sa.Column("tz", sa.Text, nullable=False, server_default="UTC"),
        sa.Column("args", pg.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("kwargs", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("queue", sa.Text, nullable=True),
        sa.Column("priority", sa.SmallInteger, nullable=True),
        sa.Column("catch_up", sa.Text, nullable=False, server_default="latest"),
        sa.Column("max_catch_up", sa.Integer, nullable=False, server_default="100"),
        sa.Column("source", sa.Text, nullable=False, server_default="code"),
        sa.Column("declared", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("next_fire_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_fire_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_job_id", sa.BigInteger, nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint(
            "(cron IS NULL) <> (every_seconds IS NULL)", name="pgqueue_periodic_kind_check"
        ),
        sa.CheckConstraint(
            "catch_up IN ('skip', 'latest', 'all')", name="pgqueue_periodic_catch_up_check"
        ),
        sa.CheckConstraint("source IN ('code', 'cli')", name="pgqueue_periodic_source_check"),
    )
    op.create_index(
        "pgqueue_periodic_due_idx",
        "pgqueue_periodic",
        ["next_fire_at"],
        postgresql_where=sa.text("enabled"),
    )


def downgrade() -> None:
    op.drop_index("pgqueue_periodic_due_idx", table_name="pgqueue_periodic")
    op.drop_table("pgqueue_periodic")
    op.drop_index("pgqueue_jobs_periodic_tick_key", table_name="pgqueue_jobs")
    op.drop_column("pgqueue_jobs", "periodic_fire_at")
    op.drop_column("pgqueue_jobs", "periodic_name")
