"""Operations: paused queues, per-minute outcome counts, attempt history and past workers.

- `pgqueue_queues`: one row per queue an operator has touched; `paused_at` set means no
  worker claims from it (checked inside the claim statement, so a pause holds fleet-wide from
  its commit and survives restarts). Enqueueing and periodic ticks are not affected.
- `pgqueue_stats`: outcome counts and histograms of pickup wait and attempt duration, per
  ten-second bucket, queue and outcome, added up by every worker a few times a minute. `pgqueue
  status`, the exporter and the dashboard read these few rows instead of counting finished
  jobs, so their cost does not grow with throughput.
- `history` on both job tables: one JSON object per earlier attempt (retries, rescues, an
  operator's retry of a finished job), written only on those paths; the last attempt is the
  row itself. Finished jobs now keep `worker_id`.
- `pgqueue_past_workers`: workers that stopped or were declared lost, with how many of their
  jobs were rescued, kept for a day (the live table `pgqueue_workers` is unchanged).
- Workers record their pool and pgqueue version.
- An index of finished jobs by task, for listing one task's jobs newest first.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

OLD_COLUMNS = (
    "id, queue, task_name, args, kwargs, status, priority, run_at, attempts, max_attempts, "
    "worker_id, result, error, created_at, started_at, finished_at, periodic_name, "
    "periodic_fire_at, expires_at, cancel_requested_at"
)
NEW_COLUMNS = OLD_COLUMNS + ", history"


def _view(columns: str) -> None:
    op.execute("DROP VIEW pgqueue_all_jobs")
    op.execute(
        f"CREATE VIEW pgqueue_all_jobs AS SELECT {columns} FROM pgqueue_jobs"
        f" UNION ALL SELECT {columns} FROM pgqueue_finished_jobs"
    )


def upgrade() -> None:
    op.create_table(
        "pgqueue_queues",
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paused_by", sa.Text, nullable=True),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("name", name="pgqueue_queues_pkey"),
    )
    op.create_table(
        "pgqueue_stats",
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("queue", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("wait_sum", sa.Float, nullable=False),
        sa.Column("wait_buckets", pg.ARRAY(sa.BigInteger), nullable=False),
        sa.Column("duration_sum", sa.Float, nullable=False),
        sa.Column("duration_buckets", pg.ARRAY(sa.BigInteger), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "queue", "outcome", name="pgqueue_stats_pkey"),
    )
    op.create_table(
        "pgqueue_past_workers",
        sa.Column("id", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("hostname", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("queues", pg.ARRAY(sa.Text), nullable=False),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("pool", sa.Text, nullable=True),
        sa.Column("version", sa.Text, nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "ended_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("ended_how", sa.Text, nullable=False),
        sa.Column("rescued", sa.Integer, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name="pgqueue_past_workers_pkey"),
        sa.CheckConstraint(
            "ended_how IN ('stopped', 'lost')", name="pgqueue_past_workers_ended_how_check"
        ),
    )
    op.create_index("pgqueue_past_workers_ended_idx", "pgqueue_past_workers", ["ended_at"])
    op.add_column("pgqueue_workers", sa.Column("pool", sa.Text, nullable=True))
    op.add_column("pgqueue_workers", sa.Column("version", sa.Text, nullable=True))
    op.add_column("pgqueue_jobs", sa.Column("history", pg.JSONB, nullable=True))
    op.add_column("pgqueue_finished_jobs", sa.Column("history", pg.JSONB, nullable=True))
    # `pgqueue jobs list --status failed` on millions of finished jobs: only the jobs that did
    # not succeed are in it, so it costs nothing on the common path.
    op.create_index(
        "pgqueue_finished_jobs_unsuccessful_idx",
        "pgqueue_finished_jobs",
        ["status", "id"],
        postgresql_where=sa.text("status <> 'succeeded'"),
    )
    # `pgqueue jobs list --task T` on millions of finished jobs, newest first: without it a
    # task with few jobs is a scan of the whole table.
    op.create_index("pgqueue_finished_jobs_task_idx", "pgqueue_finished_jobs", ["task_name", "id"])
    _view(NEW_COLUMNS)


def downgrade() -> None:
    _view(OLD_COLUMNS)
    op.drop_index("pgqueue_finished_jobs_task_idx", table_name="pgqueue_finished_jobs")
    op.drop_index("pgqueue_finished_jobs_unsuccessful_idx", table_name="pgqueue_finished_jobs")
    op.drop_column("pgqueue_finished_jobs", "history")
    op.drop_column("pgqueue_jobs", "history")
    op.drop_column("pgqueue_workers", "version")
    op.drop_column("pgqueue_workers", "pool")
    op.drop_index("pgqueue_past_workers_ended_idx", table_name="pgqueue_past_workers")
    op.drop_table("pgqueue_past_workers")
    op.drop_table("pgqueue_stats")
    op.drop_table("pgqueue_queues")
