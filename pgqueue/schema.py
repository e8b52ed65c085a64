"""pgqueue's tables as SQLAlchemy Core metadata: the single source alembic compares against.

Every table and type is prefixed `pgqueue_`, and alembic's history is kept in
`pgqueue_alembic_version`, so the schema sits beside an application's own tables and its own
alembic history without clashing.

Jobs live in two tables: `pgqueue_jobs` holds the jobs that are queued or running, the hot
table that workers claim from, kept small; a job that ends (succeeded, failed, cancelled) is
moved, in the statement that ends it, to `pgqueue_finished_jobs`, which keeps results until
retention prunes them. The view `pgqueue_all_jobs` shows both.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from pgqueue._names import (  # noqa: F401  (re-exported: the names the tables go with)
    ADVISORY_LOCK_NAMESPACE,
    NOTIFY_CANCEL,
    NOTIFY_ENQUEUED,
    NOTIFY_FINISHED,
    VERSION_TABLE,
)

metadata = sa.MetaData()

# Where claims draw their fencing tokens (pgqueue_jobs.lease): strictly increasing.
LEASE_SEQUENCE = sa.Sequence("pgqueue_job_lease_seq", metadata=metadata)

job_status = pg.ENUM(
    "waiting",
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    name="pgqueue_job_status",
    metadata=metadata,
)

# The hot table: queued and running jobs only. Its autovacuum settings (vacuum early, never
# throttled: every job leaves dead row versions behind within seconds) are set by migration 0004.
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
    # Counts the runs (against max_attempts): incremented by every claim, given back by a
    # refund (shutdown) or a release (claimed, never started). Not the fencing token: `lease`.
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
    # Set on jobs made by a periodic schedule: which schedule, and which tick.
    sa.Column("periodic_name", sa.Text, nullable=True),
    sa.Column("periodic_fire_at", sa.DateTime(timezone=True), nullable=True),
    # Not started by then: never run, ends CANCELLED (error type "Expired").
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    # Set by job.cancel() on a running job; its worker is told by NOTIFY and acts on it.
    sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True),
    # The fencing token of the job's latest claim: a fresh value of LEASE_SEQUENCE at every
    # claim, never lowered or reused. Every write on behalf of a claim (outcome, refund,
    # give-back) requires it unchanged; NULL until the first claim. Ended jobs do not keep it.
    sa.Column("lease", sa.BigInteger, nullable=True),
    # One JSON object per earlier attempt (written by retries, rescues and an operator's
    # retry of a finished job, never on the common path); the latest attempt is the row itself.
    sa.Column("history", pg.JSONB, nullable=True),
    # Metadata set at enqueue that travels with the job (a JSON object: the trace context of
    # the OpenTelemetry integration, `apply_async(headers=...)`); NULL for most jobs.
    sa.Column("headers", pg.JSONB, nullable=True),
    # The job's unique key (`unique_key=`, `@app.task(unique=...)`), NULL for most jobs; at
    # most one queued or running job holds a key (the index below), and it moves with the job.
    sa.Column("unique_key", sa.Text, nullable=True),
    # The key of a job unique only while queued (`unique_states=("queued",)`), instead of
    # `unique_key`: at most one queued job holds it (the index below), jobs of it may run.
    sa.Column("queued_key", sa.Text, nullable=True),
    # What the running task last published about itself (`set_progress`: a small JSON value)
    # and when it was written (database clock); NULL for most jobs. Written only under the
    # claim's lease; kept when the job ends, cleared by a retry or a rescue.
    sa.Column("progress", pg.JSONB, nullable=True),
    sa.Column("progress_at", sa.DateTime(timezone=True), nullable=True),
    # True for a job of a task with fleet-wide limits (pgqueue_limits), set at enqueue: it is
    # left out of the claimable index, and the limited claim takes it. NULL for other jobs.
    sa.Column("limited", sa.Boolean, nullable=True),
    # The key a per-key concurrency limit counts the job under (`concurrency_key=`).
    sa.Column("concurrency_key", sa.Text, nullable=True),
    # The workflow the job is a step of (pgqueue.workflows); NULL for most jobs. Deleting a row
    # with one (every statement that ends a job does) fires the trigger that releases or
    # cancels its dependents, in that statement's transaction (migration 0012).
    sa.Column("workflow_id", sa.BigInteger, nullable=True),
    # How many parents a 'waiting' step still waits for; NULL for any other job.
    sa.Column("waiting_for", sa.Integer, nullable=True),
    sa.CheckConstraint("attempts >= 0", name="pgqueue_jobs_attempts_check"),
    sa.CheckConstraint("max_attempts >= 1", name="pgqueue_jobs_max_attempts_check"),
    # The claim query walks this small partial index: only jobs that can be claimed are in it.
    # Jobs of limited tasks are not (their claim reads pgqueue_jobs_limited_idx): a backlog of
    # them costs the claim of every other job nothing.
    sa.Index(
        "pgqueue_jobs_claimable_idx",
        "queue",
        sa.text("priority DESC"),
        "run_at",
        "id",
        postgresql_where=sa.text("status = 'queued' AND limited IS NULL"),
    ),
    # Rescue finds the jobs of a lost worker through this one, a worker its stray claims.
    sa.Index(
        "pgqueue_jobs_running_idx",
        "worker_id",
        postgresql_where=sa.text("status = 'running'"),
    ),
    # The expiry sweep: queued jobs with a deadline, a small set.
    sa.Index(
        "pgqueue_jobs_expiring_idx",
        "expires_at",
        postgresql_where=sa.text("status = 'queued' AND expires_at IS NOT NULL"),
    ),
    # Each worker's look for cancel requests it missed: running jobs asked to stop, a small set.
    sa.Index(
        "pgqueue_jobs_cancel_requested_idx",
        "worker_id",
        postgresql_where=sa.text("status = 'running' AND cancel_requested_at IS NOT NULL"),
    ),
    # Unique jobs: an enqueue of a key that a queued or running job holds meets this index
    # (INSERT ... ON CONFLICT) and returns that job. Only keyed jobs are in it.
    sa.Index(
        "pgqueue_jobs_unique_key_idx",
        "unique_key",
        unique=True,
        postgresql_where=sa.text("unique_key IS NOT NULL AND status IN ('queued', 'running')"),
    ),
    # Unique while queued: the same for keys that only queued jobs hold (a claim takes the
    # job out of it).
    sa.Index(
        "pgqueue_jobs_queued_key_idx",
        "queued_key",
        unique=True,
        postgresql_where=sa.text("queued_key IS NOT NULL AND status = 'queued'"),
    ),
    # The limited claim: queued jobs of limited tasks, by task, in claim order.
    sa.Index(
        "pgqueue_jobs_limited_idx",
        "task_name",
        sa.text("priority DESC"),
        "run_at",
        "id",
        postgresql_where=sa.text("status = 'queued' AND limited"),
    ),
    # What the limited claim counts: running jobs of limited tasks, by task and key.
    sa.Index(
        "pgqueue_jobs_limited_running_idx",
        "task_name",
        "concurrency_key",
        postgresql_where=sa.text("status = 'running' AND limited"),
    ),
)


def _finished_jobs_table() -> sa.Table:
    """The columns of `pgqueue_jobs` (a job moves with all of them but its lease, its limit
    marker and its count of parents), for ended jobs."""
    # A claim's lease means nothing once its job has ended, nor does the marker that has the
    # limited claim take it, nor the count of parents a step waited for.
    columns = [c._copy() for c in jobs.columns if c.name not in ("lease", "limited", "waiting_for")]
    for column in columns:
        column.server_default = None
        if column.name == "id":  # ids come with the job, from pgqueue_jobs's identity
            column.identity = None
            column.autoincrement = False
    table = sa.Table(
        "pgqueue_finished_jobs",
        metadata,
        *columns,
        sa.CheckConstraint(
            "status IN ('succeeded', 'failed', 'cancelled')",
            name="pgqueue_finished_jobs_status_check",
        ),
        # Pruning, and "what finished lately" queries. Every finished job writes each index.
        sa.Index("pgqueue_finished_jobs_finished_idx", "finished_at"),
        # Listing failed or cancelled jobs among millions that succeeded: only those are in it.
        sa.Index(
            "pgqueue_finished_jobs_unsuccessful_idx",
            "status",
            "id",
            postgresql_where=sa.text("status <> 'succeeded'"),
        ),
        # `pgqueue jobs list --task T`, newest first: without it a task with few jobs among
        # millions is a scan of the whole table (100 ms per million rows). Every finished
        # job writes it (about 4 us a row in a bulk insert).
        sa.Index("pgqueue_finished_jobs_task_idx", "task_name", "id"),
    )
    table.c.finished_at.nullable = False
    return table


finished_jobs = _finished_jobs_table()

# One row per tick of a schedule that made a job: the primary key makes it one job per tick,
# however many schedulers race (the job itself moves between tables, so it cannot hold that).
periodic_ticks = sa.Table(
    "pgqueue_periodic_ticks",
    metadata,
    sa.Column("periodic_name", sa.Text, primary_key=True),
    sa.Column("fire_at", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("job_id", sa.BigInteger, nullable=False),
)

# `unique_for=`: the job that holds a key until `until`, whatever has become of it since (it
# may have ended and moved to pgqueue_finished_jobs). The primary key makes enqueuers of one
# key wait for each other; rows past `until` are reused by the next enqueue, or pruned.
unique_periods = sa.Table(
    "pgqueue_unique_periods",
    metadata,
    sa.Column("unique_key", sa.Text, primary_key=True),
    sa.Column("job_id", sa.BigInteger, nullable=True),
    sa.Column("until", sa.DateTime(timezone=True), nullable=False),
    sa.Index("pgqueue_unique_periods_until_idx", "until"),
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
    # Where its sync tasks run ('thread' or 'process'), and the pgqueue it runs.
    sa.Column("pool", sa.Text, nullable=True),
    sa.Column("version", sa.Text, nullable=True),
)

# Workers that stopped or were declared lost (moved here from pgqueue_workers by the statement
# that removes them), with how many of their jobs were rescued; pruned after a day.
past_workers = sa.Table(
    "pgqueue_past_workers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("hostname", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("queues", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("concurrency", sa.Integer, nullable=False),
    sa.Column("pool", sa.Text, nullable=True),
    sa.Column("version", sa.Text, nullable=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("ended_how", sa.Text, nullable=False),
    sa.Column("rescued", sa.Integer, nullable=False, server_default="0"),
    sa.CheckConstraint(
        "ended_how IN ('stopped', 'lost')", name="pgqueue_past_workers_ended_how_check"
    ),
    sa.Index("pgqueue_past_workers_ended_idx", "ended_at"),
)

# Queues an operator has touched. A queue with `paused_at` set is skipped by every claim
# (inside the claim statement); enqueueing and periodic ticks go on.
queues = sa.Table(
    "pgqueue_queues",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("paused_by", sa.Text, nullable=True),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

# Outcome counts with histograms of pickup wait and attempt duration (bounds in
# pgqueue/rollup.py), per ten-second bucket, queue and outcome: workers add their counts a few
# times a minute, and status, the exporter and the dashboard read these rows instead of
# counting finished jobs.
stats = sa.Table(
    "pgqueue_stats",
    metadata,
    sa.Column("bucket", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("queue", sa.Text, primary_key=True),
    sa.Column("outcome", sa.Text, primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("wait_sum", sa.Float, nullable=False),
    sa.Column("wait_buckets", pg.ARRAY(sa.BigInteger), nullable=False),
    sa.Column("duration_sum", sa.Float, nullable=False),
    sa.Column("duration_buckets", pg.ARRAY(sa.BigInteger), nullable=False),
)

periodic = sa.Table(
    "pgqueue_periodic",
    metadata,
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
    # 'code' rows are synchronised from @app.periodic; 'cli' rows are managed at run time.
    sa.Column("source", sa.Text, nullable=False, server_default="code"),
    # Whether the schedule is still declared in code (false: removed from code, kept disabled).
    sa.Column("declared", sa.Boolean, nullable=False, server_default=sa.true()),
    # The operator's switch (`pgqueue periodic enable/disable`); sync never changes it.
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
    sa.Index(
        "pgqueue_periodic_due_idx",
        "next_fire_at",
        postgresql_where=sa.text("enabled"),
    ),
)


# Fleet-wide limits, one row per limited task, written from the tasks' declarations when a
# worker starts (pgqueue/limits.py). A rate of `rate` jobs per `per_seconds` keeps in `recent`
# the start times of the jobs it let start in the last period, sorted; running counts are not
# kept but counted, from pgqueue_jobs_limited_running_idx.
limits = sa.Table(
    "pgqueue_limits",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("rate", sa.Integer, nullable=True),
    sa.Column("per_seconds", sa.Integer, nullable=True),
    sa.Column("concurrency", sa.Integer, nullable=True),
    sa.Column("key_concurrency", sa.Integer, nullable=True),
    sa.Column("recent", pg.ARRAY(sa.DateTime(timezone=True)), nullable=True),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

# Workflows (pgqueue.workflows): one row each, with its shape (the tree `pgqueue workflows show`
# draws, naming each step's job). Its steps are jobs with its `workflow_id`; what each step
# waits for is in `pgqueue_dependencies`, resolved by the trigger `pgqueue_workflow_step_ended`
# on `pgqueue_jobs` (migration 0012) in the transaction that ends each parent.
workflows = sa.Table(
    "pgqueue_workflows",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("tree", pg.JSONB, nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    # Retention: workflows past the cutoff whose jobs were all pruned go with them.
    sa.Index("pgqueue_workflows_created_idx", "created_at"),
)

# One row per step of a workflow: whether it is a step or the link_error callback, whether its
# parents' results are prepended to its arguments when it is released, and its delay then.
workflow_steps = sa.Table(
    "pgqueue_workflow_steps",
    metadata,
    sa.Column("job_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("workflow_id", sa.BigInteger, nullable=False),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("takes_result", sa.Boolean, nullable=False),
    sa.Column("delay", sa.Float, nullable=False, server_default="0"),
    sa.Column("eta", sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("role IN ('step', 'link_error')", name="pgqueue_workflow_steps_role_check"),
    sa.Index("pgqueue_workflow_steps_workflow_idx", "workflow_id", "job_id"),
)

# The edges not resolved yet: the child waits for its parent's success ('result': the parent's
# result is its value; 'results': one of a chord's members, at `position` in the list) or for
# any step's failure ('error': the child is the workflow's link_error callback). A child's
# edges are deleted when it is released or cancelled.
dependencies = sa.Table(
    "pgqueue_dependencies",
    metadata,
    sa.Column("parent_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("child_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("position", sa.Integer, nullable=False, server_default="0"),
    sa.CheckConstraint(
        "kind IN ('result', 'results', 'error')", name="pgqueue_dependencies_kind_check"
    ),
    sa.Index("pgqueue_dependencies_child_idx", "child_id"),
)
