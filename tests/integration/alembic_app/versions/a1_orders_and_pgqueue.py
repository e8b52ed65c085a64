"""The application's migration that also installs pgqueue's schema.

Revision ID: a1
Revises:
"""

import sqlalchemy as sa
from alembic import op

import pgqueue.migrate

revision = "a1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    pgqueue.migrate.upgrade(op.get_bind())
    op.create_table("orders", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("orders")
    pgqueue.migrate.downgrade(op.get_bind(), "base")
