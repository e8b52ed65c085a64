"""Job headers: metadata that travels with a job, apart from its arguments.

`headers` on both job tables: a JSON object set at enqueue (by `apply_async(headers=...)` or
an enqueue hook, such as the OpenTelemetry integration's trace context), read by the worker
at claim and given to the task as `current_job().headers`. NULL for a job without any, which
is most jobs: the column has no default, so adding it rewrites neither table, and a job
without headers stores nothing. It moves with the job to `pgqueue_finished_jobs` and back
(an operator's retry).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

OLD_COLUMNS = (
    "id, queue, task_name, args, kwargs, status, priority, run_at, attempts, max_attempts, "
    "worker_id, result, error, created_at, started_at, finished_at, periodic_name, "
    "periodic_fire_at, expires_at, cancel_requested_at, history"
)
NEW_COLUMNS = OLD_COLUMNS + ", headers"


def _view(columns: str) -> None:
    op.execute("DROP VIEW pgqueue_all_jobs")
    op.execute(
        f"CREATE VIEW pgqueue_all_jobs AS SELECT {columns} FROM pgqueue_jobs"
        f" UNION ALL SELECT {columns} FROM pgqueue_finished_jobs"
    )


def upgrade() -> None:
    op.add_column("pgqueue_jobs", sa.Column("headers", pg.JSONB, nullable=True))
    op.add_column("pgqueue_finished_jobs", sa.Column("headers", pg.JSONB, nullable=True))
    _view(NEW_COLUMNS)


def downgrade() -> None:
    _view(OLD_COLUMNS)
    op.drop_column("pgqueue_finished_jobs", "headers")
    op.drop_column("pgqueue_jobs", "headers")
