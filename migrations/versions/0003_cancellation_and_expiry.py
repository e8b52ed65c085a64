"""Cancellation of running jobs and expiry of queued ones.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "pgqueue_jobs", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "pgqueue_jobs",
        sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "pgqueue_jobs_expiring_idx",
        "pgqueue_jobs",
        ["expires_at"],
        postgresql_where=sa.text("status = 'queued' AND expires_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("pgqueue_jobs_expiring_idx", table_name="pgqueue_jobs")
    op.drop_column("pgqueue_jobs", "cancel_requested_at")
    op.drop_column("pgqueue_jobs", "expires_at")
