"""A fencing token that only grows: `pgqueue_jobs.lease`, drawn from a sequence at each claim.

Until now the attempt counter was the token, but refunds (a shutdown gives an attempt back) and
releases (claimed, never started) lower it, so a later claim could get the same number again: a
refund sent twice (its first commit reply lost) then put another worker's running job back in
the queue. A lease is never lowered or reused. The column is nullable, so workers of the
previous release keep working (with their old guard) during a rolling deploy.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SEQUENCE pgqueue_job_lease_seq")
    op.add_column("pgqueue_jobs", sa.Column("lease", sa.BigInteger, nullable=True))


def downgrade() -> None:
    op.drop_column("pgqueue_jobs", "lease")
    op.execute("DROP SEQUENCE pgqueue_job_lease_seq")
