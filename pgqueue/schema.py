"""pgqueue's tables as SQLAlchemy Core metadata: the single source alembic compares against.

Every table and type is prefixed `pgqueue_`, and alembic's history is kept in
`pgqueue_alembic_version`, so the schema sits beside an application's own tables and its own
alembic history without clashing.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

VERSION_TABLE = "pgqueue_alembic_version"
NOTIFY_ENQUEUED = "pgqueue_enqueued"
NOTIFY_FINISHED = "pgqueue_finished"
# First key of the two-key advisory locks that pgqueue workers hold (ASCII "pgqu").
ADVISORY_LOCK_NAMESPACE = 0x70677175

metadata = sa.MetaData()

job_status = pg.ENUM(
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    name="pgqueue_job_status",
    metadata=metadata,
)

jobs = sa.Table(
    "pgqueue_jobs",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("queue", sa.Text, nullable=False, server_default="default"),
    sa.Column("task_name", sa.Text, nullable=False),
    sa.Column("args", pg.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    sa.Column("kwargs", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("status", job_status, nullable=False, server_default="queued"),
    sa.Column("priority", sa.SmallInteger, nullable=False, server_default="0"),
    sa.Column("run_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    # Incremented by every claim: the attempt number is also the claim's fencing token.
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
    # The claim query walks this small partial index: only jobs that can be claimed are in it.
    sa.Index(
        "pgqueue_jobs_claimable_idx",
        "queue",
        sa.text("priority DESC"),
        "run_at",
        "id",
        postgresql_where=sa.text("status = 'queued'"),
    ),
    # Rescue finds the jobs of a lost worker through this one.
    sa.Index(
        "pgqueue_jobs_running_idx",
        "worker_id",
        postgresql_where=sa.text("status = 'running'"),
    ),
    # Pruning and "what finished lately" queries.
    sa.Index(
        "pgqueue_jobs_finished_idx",
        "finished_at",
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    ),
)

workers = sa.Table(
    "pgqueue_workers",
    metadata,
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
        "heartbeat_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)
