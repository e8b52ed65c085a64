"""Jobs and workers tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    job_status = pg.ENUM(
        "queued", "running", "succeeded", "failed", "cancelled", name="pgqueue_job_status"
    )
    job_status.create(op.get_bind(), checkfirst=False)
    op.create_table(
        "pgqueue_jobs",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("queue", sa.Text, nullable=False, server_default="default"),
        sa.Column("task_name", sa.Text, nullable=False),
        sa.Column("args", pg.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("kwargs", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column(
            "status",
            pg.ENUM(name="pgqueue_job_status", create_type=False),
            nullable=False,
            server_default="queued",
        ),
        sa.Column("priority", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column(
            "run_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False, server_default="3"),
        sa.Column("worker_id", sa.Integer, nullable=True),
        sa.Column("result", pg.JSONB, nullable=True),
        sa.Column("error", pg.JSONB, nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("attempts >= 0", name="pgqueue_jobs_attempts_check"),
        sa.CheckConstraint("max_attempts >= 1", name="pgqueue_jobs_max_attempts_check"),
    )
    op.create_index(
        "pgqueue_jobs_claimable_idx",
        "pgqueue_jobs",
        ["queue", sa.text("priority DESC"), "run_at", "id"],
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_index(
        "pgqueue_jobs_running_idx",
        "pgqueue_jobs",
        ["worker_id"],
        postgresql_where=sa.text("status = 'running'"),
    )
    op.create_index(
        "pgqueue_jobs_finished_idx",
        "pgqueue_jobs",
        ["finished_at"],
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    )
    op.create_table(
        "pgqueue_workers",
        sa.Column("id", sa.Integer, sa.Identity(always=False), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("hostname", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("queues", pg.ARRAY(sa.Text), nullable=False),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column(
            "started_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "heartbeat_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
    )


def downgrade() -> None:
    op.drop_table("pgqueue_workers")
    op.drop_index("pgqueue_jobs_finished_idx", table_name="pgqueue_jobs")
    op.drop_index("pgqueue_jobs_running_idx", table_name="pgqueue_jobs")
    op.drop_index("pgqueue_jobs_claimable_idx", table_name="pgqueue_jobs")
    op.drop_table("pgqueue_jobs")
    pg.ENUM(name="pgqueue_job_status").drop(op.get_bind(), checkfirst=False)
