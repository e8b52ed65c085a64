"""Every SQL statement the engine runs, each named and each with a one-line why.

Parameters use psycopg's `%(name)s` style; `as_sqlalchemy()` turns a statement into the
`:name` form for SQLAlchemy connections. Each state change is one guarded statement, so two
processes can never both "win" the same job: claims use SKIP LOCKED, and every write on behalf
of a claim is made only `WHERE status = 'running' AND lease = <the claim's lease>`, the fencing
token each claim draws afresh from a sequence (docs/reliability.md lists every guard).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache

from pgqueue._names import (
    ADVISORY_LOCK_NAMESPACE,
    NOTIFY_CANCEL,
    NOTIFY_ENQUEUED,
    NOTIFY_FINISHED,
    NOTIFY_PROGRESS,
)

JOB_COLUMNS = (
    "id, queue, task_name, args, kwargs, status, priority, run_at, attempts, max_attempts, "
    "worker_id, result, error, created_at, started_at, finished_at, expires_at, "
    "cancel_requested_at, headers, COALESCE(unique_key, queued_key) AS unique_key, progress, "
    "progress_at, workflow_id"
)
# A job's key is in `unique_key` or, for a job unique only while queued, in `queued_key`
# (migration 0013); a row read through JOB_COLUMNS shows it as `unique_key` either way.


def _archive(ended: str, status: str, error: str, result: str = "NULL") -> str:
    """An INSERT that moves the rows of CTE `ended` (deleted from pgqueue_jobs, RETURNING *)
    to pgqueue_finished_jobs, ending them with `status`, `error` and `result` (SQL
    expressions over the alias `e`). Every statement that ends a job uses it. The job keeps
    the worker that ran its last attempt, and the history of the earlier ones (copied, not
    built: ending a job costs no JSON work), its headers, its unique key or `queued_key`
    (which no longer holds anything once the job has left pgqueue_jobs), the last progress
    its last attempt published, its concurrency key, and its workflow (the deletion of a row
    with one fires the trigger that resolves the step's dependents once this statement has
    written its outcome, in the same transaction: see the workflows migration)."""
    return f"""INSERT INTO pgqueue_finished_jobs (
        id, queue, task_name, args, kwargs, status, priority, run_at, attempts, max_attempts,
        worker_id, result, error, created_at, started_at, finished_at, periodic_name,
        periodic_fire_at, expires_at, cancel_requested_at, history, headers, unique_key,
        progress, progress_at, concurrency_key, queued_key, workflow_id)
    SELECT e.id, e.queue, e.task_name, e.args, e.kwargs, ({status})::pgqueue_job_status,
        e.priority, e.run_at, e.attempts, e.max_attempts, e.worker_id, {result}, {error},
        e.created_at, e.started_at, now(), e.periodic_name, e.periodic_fire_at, e.expires_at,
        e.cancel_requested_at, e.history, e.headers, e.unique_key, e.progress, e.progress_at,
        e.concurrency_key, e.queued_key, e.workflow_id
    FROM {ended} AS e
    RETURNING id, task_name, status, attempts, max_attempts, worker_id"""


def _attempt(alias: str, outcome: str, error: str, ended_at: str = "now()") -> str:
    """One entry of a job's `history`: the attempt that the row `alias` holds (its number,
    worker and start), ended at `ended_at` with `outcome` and `error` (SQL expressions), and
    its result when it has one. Timestamps become ISO 8601 strings."""
    a = alias
    return (
        f"jsonb_build_object('attempt', {a}.attempts, 'worker_id', {a}.worker_id,"
        f" 'started_at', {a}.started_at, 'ended_at', {ended_at}, 'outcome', {outcome},"
        f" 'error', {error})"
        f" || CASE WHEN {a}.result IS NULL THEN '{{}}'::jsonb"
        f" ELSE jsonb_build_object('result', {a}.result) END"
    )


def _with_attempt(alias: str, outcome: str, error: str, ended_at: str = "now()") -> str:
    """The row's `history` with its current attempt appended (see `_attempt`)."""
    entry = _attempt(alias, outcome, error, ended_at)
    return f"COALESCE({alias}.history, '[]'::jsonb) || jsonb_build_array({entry})"


def _lost_message(alias: str) -> str:
    return (
        "format('worker lost while running attempt %%s of %%s', "
        f"{alias}.attempts, {alias}.max_attempts)"
    )


# The partial unique index of keys held while queued only (migration 0013).
QUEUED_KEY_INDEX = "pgqueue_jobs_queued_key_idx"


def _queued_key_back(alias: str, returning: str) -> str:
    """The `queued_key` of the job `alias` (running) as it goes back to queued, in a statement
    that sends back the jobs whose ids the array `returning` holds: it keeps its key unless a
    queued job holds it, or a job of lower id going back in the same statement has it too.
    Otherwise it runs again without one (the same rule as an operator's retry): a job that
    returns must never fail on, nor replace, the job waiting under its key, and one job's key
    must never cost the other jobs of a batch their outcome. A key taken by an enqueue that
    commits while this statement runs is met by the index and fails the statement, which its
    caller writes again (see complete.py): it then sees that job, and gives the key up."""
    a = alias
    return f"""CASE WHEN {a}.queued_key IS NULL OR EXISTS (
            SELECT FROM pgqueue_jobs AS q
            WHERE q.queued_key = {a}.queued_key AND q.status = 'queued')
        OR EXISTS (
            SELECT FROM pgqueue_jobs AS q
            WHERE q.id = ANY({returning}) AND q.id < {a}.id AND q.queued_key = {a}.queued_key)
        THEN NULL ELSE {a}.queued_key END"""


def _enqueued(alias: str = "") -> str:
    """The `pgqueue_enqueued` payload for a job (columns of `alias`): its queue and where it
    sorts, `queue@run_at@priority` (run_at in seconds since the epoch), with `@later` when it
    is due after now(). A worker moves its position in the queue back to it (claim.py).
    Every job of one transaction enqueued due now has the same payload, so PostgreSQL sends it
    once: a transaction that enqueues 10,000 jobs wakes workers with one notification."""
    a = f"{alias}." if alias else ""
    return (
        f"{a}queue || '@' || extract(epoch FROM {a}run_at)::text || '@' || {a}priority"
        f" || CASE WHEN {a}run_at > now() THEN '@later' ELSE '' END"
    )


def _error(type_: str, message: str) -> str:
    """A job's stored error, built in SQL."""
    return f"jsonb_build_object('type', '{type_}', 'message', {message}, 'traceback', NULL)"


# A new job's due time and expiry from an enqueue's options (the parameters `eta`,
# `countdown`, `expires_at` and `expires_in`), on the database's clock.
_DUE_AT = """COALESCE(
        CAST(%(eta)s AS timestamptz),
        now() + CAST(%(countdown)s AS float8) * interval '1 second',
        now())"""
_EXPIRES_AT = """COALESCE(
        CAST(%(expires_at)s AS timestamptz),
        now() + CAST(%(expires_in)s AS float8) * interval '1 second')"""


# Insert one job and wake idle workers of its queue, in the caller's transaction (the NOTIFY is
# delivered only on commit). The payload says where the job sorts, so that a worker reads from
# there even when it claimed newer jobs before this commit, and when it is due, so that a worker
# can set a timer.
# Only what the database decided comes back (the caller knows the rest: see JobRequest.job_row).
# Casts are spelled CAST(... AS ...) because this statement also runs through SQLAlchemy.
# A job with headers, or of a task with limits, is inserted by this statement too, whenever it
# is due.
INSERT_JOB = f"""
INSERT INTO pgqueue_jobs (
    queue, task_name, args, kwargs, priority, run_at, max_attempts, expires_at, headers,
    limited, concurrency_key)
VALUES (
    %(queue)s, %(task_name)s, CAST(%(args)s AS jsonb), CAST(%(kwargs)s AS jsonb),
    %(priority)s,
    {_DUE_AT},
    %(max_attempts)s,
    {_EXPIRES_AT},
    CAST(%(headers)s AS jsonb), CAST(%(limited)s AS boolean), CAST(%(concurrency_key)s AS text)
)
RETURNING id, run_at, created_at, expires_at,
    pg_notify('{NOTIFY_ENQUEUED}', {_enqueued()})::text AS notified
"""

# INSERT_JOB for the common case, a job due now that never expires, without headers: run_at
# and created_at are the same now(), expires_at is NULL, so only the id and created_at come
# back. Every column returned costs a few percent of an enqueue; this is the statement
# `delay()` runs. Its payload is INSERT_JOB's for a job due now (`queue@run_at@priority`).
INSERT_JOB_NOW = f"""
INSERT INTO pgqueue_jobs (queue, task_name, args, kwargs, priority, max_attempts)
VALUES (
    %(queue)s, %(task_name)s, CAST(%(args)s AS jsonb), CAST(%(kwargs)s AS jsonb),
    %(priority)s, %(max_attempts)s)
RETURNING id, created_at, pg_notify(
    '{NOTIFY_ENQUEUED}', queue || '@' || extract(epoch FROM run_at)::text || '@' || priority)
"""


def _claim_tail(started_at: str, more: str = "", last_row: str = "") -> str:
    """The claim statements' end, after their CTE `picked` (id, dead): the picked jobs start
    (their attempt counted, a new lease drawn, started at `started_at`), or end CANCELLED when
    they are `dead`. `more` adds CTEs (after `claimed`, `ended` and `archived`), `last_row` a
    row after the claim's rows."""
    archived = _archive(
        "ended",
        "'cancelled'",
        "CASE WHEN e.cancel_requested_at IS NOT NULL THEN "
        + _error("Cancelled", "'cancelled on request'")
        + " ELSE "
        + _error("Expired", "'not started before it expired at ' || e.expires_at::text")
        + " END",
    )
    return f"""), claimed AS (
    -- By `id = ANY(ARRAY(...))`, a primary-key lookup per job: as a join with `picked`, on
    -- statistics taken while the queue was empty, the planner walked the whole primary key
    -- once per claim (and a claim of 10 cost 30 ms with 20,000 jobs waiting).
    UPDATE pgqueue_jobs AS j
    SET status = 'running', attempts = j.attempts + 1, worker_id = %(worker_id)s,
        started_at = {started_at}, lease = nextval('pgqueue_job_lease_seq')
    WHERE j.id = ANY(ARRAY(SELECT id FROM picked WHERE NOT dead))
    -- The pickup wait, by the database's clock: how long the job was due before this claim.
    RETURNING j.id, j.queue, j.task_name, j.args::text, j.kwargs::text, j.priority, j.attempts,
              j.max_attempts, j.run_at, j.lease, j.created_at,
              greatest(extract(epoch FROM now() - j.run_at), 0)::float8 AS wait,
              j.headers::text
), ended AS (
    DELETE FROM pgqueue_jobs AS j USING picked AS p
    WHERE j.id = ANY(ARRAY(SELECT id FROM picked WHERE dead)) AND j.id = p.id
    RETURNING j.*
), archived AS (
    {archived}
){more}
SELECT c.*, false AS dead, NULL::text AS notified FROM claimed AS c
UNION ALL
SELECT a.id, NULL, a.task_name, NULL, NULL, 0, a.attempts, a.max_attempts, NULL, NULL, NULL,
       NULL, NULL, true,
       pg_notify('{NOTIFY_FINISHED}', a.id::text)::text
FROM archived AS a{last_row}"""


# Claim up to `limit` due jobs of the given queues, skipping rows other workers hold; the
# attempt counter is bumped here, and the claim draws its fencing token (`lease`) from a
# sequence, so that no later claim of the job can ever hold the same one. Each queue is read
# on its own through the claimable index, in (priority DESC, run_at, id) order, so a claim
# costs the same with 20 or 20 million jobs waiting (one query over all queues at once has
# to sort the whole backlog); queues are taken in the order given, which the worker rotates.
#
# The queues are given as stretches, in claim order (see claim.claim_params): a position
# (`after_*`: where this worker's claims got to in one priority) is read from there on, within
# its priority: the jobs before it were claimed already, and while another session holds an
# old snapshot their index entries cannot be cleaned, so reading from the start would step over
# all of them at every claim. A stretch without a position reads the priorities strictly
# between `higher_than` and `lower_than` from their start: those between and below the
# positions, or the whole queue. The LIMIT stops the reading as soon as the claim is full, so
# a busy worker reads only its first stretch. Jobs that sort before a position (committed
# late, a countdown or retry come due, a rescued job, a higher priority) are announced by
# their notification, and the worker moves the position back to them; it reads each queue
# whole at least once a second, for a lost notification.
#
# A picked job that expired, or whose cancellation was requested (while it ran before a retry
# or rescue), ends CANCELLED here instead of running: `dead` tells the worker, and its waiters
# are notified. Jobs of tasks with fleet-wide limits (`limited`) are not in the claimable index
# (`limited IS NULL` lets the planner use it): CLAIM_LIMITED_JOBS takes them, at the pace their
# limits allow.
CLAIM_JOBS = f"""
WITH picked AS (
    SELECT j.id, j.dead
    FROM (
        SELECT * FROM unnest(
            %(queues)s::text[], %(after_priority)s::int[], %(after_run_at)s::timestamptz[],
            %(after_id)s::bigint[], %(lower_than)s::int[], %(higher_than)s::int[]
        ) AS q(name, priority, run_at, id, lower_than, higher_than)
        -- A paused queue is not read: a pause holds for every claim that starts after it
        -- commits, on every worker (one primary-key probe of a tiny table per queue).
        WHERE NOT EXISTS (
            SELECT FROM pgqueue_queues AS p WHERE p.name = q.name AND p.paused_at IS NOT NULL
        )
    ) AS q
    CROSS JOIN LATERAL (
        SELECT * FROM (
            SELECT id, (cancel_requested_at IS NOT NULL OR expires_at <= now()) IS TRUE AS dead
            FROM pgqueue_jobs
            WHERE q.priority IS NOT NULL
              AND status = 'queued' AND queue = q.name AND priority = q.priority
              AND (run_at, id) > (q.run_at, q.id) AND run_at <= now() AND limited IS NULL
            ORDER BY run_at, id
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        ) AS after_position
        UNION ALL
        SELECT * FROM (
            SELECT id, (cancel_requested_at IS NOT NULL OR expires_at <= now()) IS TRUE AS dead
            FROM pgqueue_jobs
            WHERE q.priority IS NULL
              AND status = 'queued' AND queue = q.name
              AND priority < q.lower_than AND priority > q.higher_than AND run_at <= now()
              AND limited IS NULL
            ORDER BY priority DESC, run_at, id
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        ) AS from_start
    ) AS j
    LIMIT %(limit)s
{_claim_tail("now()")}
"""

# Write a batch of outcomes in one statement and one round trip; each row applies only if the
# job is still running under the same claim (its lease), so neither a late worker (its job
# rescued and claimed again) nor a batch sent again after its commit reply was lost can touch
# a later claim. A retry stays in pgqueue_jobs with its new due time, the attempt it ends
# appended to its history; an ended job moves to pgqueue_finished_jobs with its result or error
# (a success, the common case, builds no history). The same statement tells
# waiters (Job.wait) which jobs finished, and workers when each retry comes due (so they set a
# timer instead of waiting for a poll); notifications are delivered on commit. The jobs are
# found by `id = ANY(ARRAY(...))`, a primary-key lookup per outcome; the status is compared as
# text so that the planner cannot pick the partial index of running jobs instead and walk every
# running job of the fleet (and its dead entries) for each batch, as it did on stale statistics.
_RETRIED = "ARRAY(SELECT id FROM outcome WHERE status = 'queued')"
COMPLETE_JOBS = f"""
WITH outcome AS (
    SELECT * FROM jsonb_to_recordset(%(outcomes)s::jsonb) AS o(
        id bigint, lease bigint, status text, result jsonb, error jsonb, delay float8,
        eta timestamptz, refund int)
), retried AS (
    UPDATE pgqueue_jobs AS j
    SET status = 'queued',
        attempts = j.attempts - COALESCE(o.refund, 0),
        error = o.error,
        history = {_with_attempt("j", "'retried'", "o.error")},
        worker_id = NULL,
        lease = NULL,
        progress = NULL,
        progress_at = NULL,
        run_at = COALESCE(o.eta, now() + o.delay * interval '1 second'),
        queued_key = {_queued_key_back("j", _RETRIED)}
    FROM outcome AS o
    WHERE j.id = ANY(ARRAY(SELECT id FROM outcome WHERE status = 'queued'))
      AND o.status = 'queued' AND j.id = o.id AND j.lease = o.lease
      AND j.status::text = 'running'
    RETURNING j.id, j.queue, j.run_at, j.priority
), ended AS (
    DELETE FROM pgqueue_jobs AS j
    USING outcome AS o
    WHERE j.id = ANY(ARRAY(SELECT id FROM outcome WHERE status <> 'queued'))
      AND o.status <> 'queued' AND j.id = o.id AND j.lease = o.lease
      AND j.status::text = 'running'
    RETURNING j.*, o.status AS new_status, o.result AS new_result, o.error AS new_error
), archived AS (
    {_archive("ended", "e.new_status", "e.new_error", "e.new_result")}
), finished AS (
    SELECT pg_notify('{NOTIFY_FINISHED}', string_agg(id::text, ','))
    FROM archived HAVING count(*) > 0
), retries AS (
    -- Where each retry sorts and when it is due (identical payloads are sent once): a worker
    -- sets a timer per due time, so a retry due just after another is not left to the poll
    -- tick, and reads from the retry's place in the queue when it comes due.
    SELECT pg_notify('{NOTIFY_ENQUEUED}', {_enqueued()})
    FROM retried
), notified AS (
    SELECT (SELECT count(*) FROM finished) + (SELECT count(*) FROM retries) AS n
)
SELECT id, (SELECT n FROM notified) AS notified FROM archived
UNION ALL
SELECT id, (SELECT n FROM notified) FROM retried
"""

# Write the latest progress of running jobs (`set_progress`, coalesced by the worker: see
# progress.py), a batch in one statement; each applies only under its claim's lease, as an
# outcome does, so an attempt whose job was rescued and claimed again cannot overwrite the new
# attempt's progress. Waiters (Job.wait_progress) are told which jobs have a new value. The
# value comes as JSON text, so that a published JSON null is stored as such.
WRITE_PROGRESS = f"""
WITH progress AS (
    SELECT * FROM jsonb_to_recordset(%(progress)s::jsonb) AS p(id bigint, lease bigint, value text)
), written AS (
    UPDATE pgqueue_jobs AS j SET progress = p.value::jsonb, progress_at = now()
    FROM progress AS p
    WHERE j.id = ANY(ARRAY(SELECT id FROM progress)) AND j.id = p.id AND j.lease = p.lease
      AND j.status::text = 'running'
    RETURNING j.id
)
SELECT id, pg_notify('{NOTIFY_PROGRESS}', id::text)::text AS notified FROM written
"""

# Give back jobs that were claimed but never started (a shutdown, a claim whose reply was
# lost): the attempt is not counted. Guarded by each claim's lease, like an outcome. The same
# statement tells workers where the jobs sort: they keep their run_at, which is before where
# the workers' claims have got to.
RELEASE_UNSTARTED = f"""
WITH released AS (
    UPDATE pgqueue_jobs AS j
    SET status = 'queued', attempts = j.attempts - 1, worker_id = NULL, started_at = NULL,
        lease = NULL, queued_key = {_queued_key_back("j", "%(ids)s::bigint[]")}
    FROM unnest(%(ids)s::bigint[], %(leases)s::bigint[]) AS c(id, lease)
    WHERE j.id = ANY(%(ids)s::bigint[]) AND j.id = c.id AND j.status = 'running'
      AND j.lease = c.lease
    RETURNING j.id, j.queue, j.run_at, j.priority
)
SELECT r.id, pg_notify('{NOTIFY_ENQUEUED}', {_enqueued("r")})::text AS notified FROM released AS r
"""

# Announce a worker; run in the same transaction as LOCK_WORKER so that no rescuer can ever see
# the row without the lock held.
REGISTER_WORKER = """
INSERT INTO pgqueue_workers (name, hostname, pid, queues, concurrency, pool, version)
VALUES (%(name)s, %(hostname)s, %(pid)s, %(queues)s, %(concurrency)s, %(pool)s, %(version)s)
RETURNING id
"""

# The worker's liveness: a session lock that PostgreSQL itself releases when the session ends.
LOCK_WORKER = f"SELECT pg_advisory_lock({ADVISORY_LOCK_NAMESPACE}, %(worker_id)s)"

# A worker registering again under a new id (its old session is gone, or still held by a
# server that has not noticed) takes over the jobs still running under its old id, in the same
# transaction as the new row and lock: what the rescuer has not taken back is still this
# worker's to finish. The leases returned are the claims it keeps; any other attempt it runs
# was rescued, and the worker stops it.
ADOPT_JOBS = """
UPDATE pgqueue_jobs SET worker_id = %(worker_id)s
WHERE worker_id = %(old_worker_id)s AND status = 'running'
RETURNING lease
"""

# Heartbeat, the backstop for a session that outlives its worker; no row means this worker was
# declared lost and must register again.
HEARTBEAT = "UPDATE pgqueue_workers SET heartbeat_at = now() WHERE id = %(worker_id)s RETURNING id"

# The heartbeat a running worker sends every second, which also tells it, for each of its
# queues, its place among the live workers that serve the queue and how many they are: an
# enqueue's notification wakes only a few of them (claim.WAKE_FANOUT), chosen from the
# notification itself, the same few on every worker. No row: as HEARTBEAT.
HEARTBEAT_FLEET = """
WITH me AS (
    UPDATE pgqueue_workers SET heartbeat_at = now() WHERE id = %(worker_id)s
    RETURNING id, queues
)
SELECT q.name, count(*) FILTER (WHERE w.id < me.id)::int AS place, count(*)::int AS fleet
FROM me CROSS JOIN unnest(me.queues) AS q(name)
JOIN pgqueue_workers AS w
  ON w.queues @> ARRAY[q.name]
 AND (w.id = me.id OR w.heartbeat_at > now() - interval '5 seconds')
GROUP BY q.name
"""


def _to_past_workers(removed: str, ended_how: str, rescued: str) -> str:
    """An INSERT that keeps the rows of CTE `removed` (deleted from pgqueue_workers, RETURNING
    *) in pgqueue_past_workers, ended `ended_how` with `rescued` jobs taken back (an SQL
    expression over the alias `w`)."""
    return f"""INSERT INTO pgqueue_past_workers (
        id, name, hostname, pid, queues, concurrency, pool, version, started_at, heartbeat_at,
        ended_how, rescued)
    SELECT w.id, w.name, w.hostname, w.pid, w.queues, w.concurrency, w.pool, w.version,
        w.started_at, w.heartbeat_at, '{ended_how}', {rescued}
    FROM {removed} AS w
    ON CONFLICT (id) DO NOTHING"""


# A clean exit removes the worker's row (its jobs were finished or released before) and keeps
# it among the past workers, in one statement.
UNREGISTER_WORKER = f"""
WITH removed AS (
    DELETE FROM pgqueue_workers WHERE id = %(worker_id)s RETURNING *
)
{_to_past_workers("removed", "stopped", "0")}
"""


def _rescue(lost: str, running: str, past: str) -> str:
    """A statement that puts running jobs of lost workers back in the queue (the lost attempt
    appended to their history), or ends them FAILED when no attempts remain, and returns
    them. `lost` is a WITH clause (or nothing) that the condition `running` on a running job
    (its alias spelled `{j}`) may use; `past` a CTE recording the workers' rescued jobs, which
    it finds in `taken` (worker_id, jobs)."""
    lost_error = _error("WorkerLost", _lost_message("j"))
    # The keyed jobs this statement puts back (read only when one of them has a queued key).
    returning = f"""ARRAY(
            SELECT s.id FROM pgqueue_jobs AS s
            WHERE s.status = 'running' AND s.attempts < s.max_attempts
              AND s.queued_key IS NOT NULL AND {running.format(j="s")})"""
    return f"""{lost}
requeued AS (
    UPDATE pgqueue_jobs AS j
    SET status = 'queued', worker_id = NULL, lease = NULL, progress = NULL, progress_at = NULL,
        error = {lost_error},
        history = {_with_attempt("j", "'lost'", lost_error)},
        queued_key = {_queued_key_back("j", returning)}
    WHERE j.status = 'running' AND j.attempts < j.max_attempts AND {running.format(j="j")}
    -- RETURNING shows the row as updated, without its worker: the lost worker's id is read
    -- from the history entry this very statement appended.
    RETURNING j.id, j.task_name, j.status::text AS status, j.attempts, j.max_attempts, j.queue,
              j.run_at, j.priority, (j.history -> -1 ->> 'worker_id')::int AS worker_id
), ended AS (
    DELETE FROM pgqueue_jobs AS j
    WHERE j.status = 'running' AND j.attempts >= j.max_attempts AND {running.format(j="j")}
    RETURNING j.*
), archived AS (
    {_archive("ended", "'failed'", _error("WorkerLost", _lost_message("e")))}
), taken AS (
    SELECT worker_id, count(*) AS jobs
    FROM (SELECT worker_id FROM requeued UNION ALL SELECT worker_id FROM archived) AS t
    GROUP BY worker_id
), past AS (
    {past}
)
SELECT a.id, a.task_name, a.attempts, a.max_attempts, a.status::text AS status,
       pg_notify('{NOTIFY_FINISHED}', a.id::text)::text AS notified
FROM archived AS a
UNION ALL
SELECT r.id, r.task_name, r.attempts, r.max_attempts, r.status,
       pg_notify('{NOTIFY_ENQUEUED}', {_enqueued("r")})::text
FROM requeued AS r
"""


# Find workers whose session lock is gone (and whose heartbeat is older than a short grace, so
# a reconnecting worker keeps its jobs; after a server restart, which ends every session, the
# grace runs from the server's start) or whose heartbeat is stale, delete them, and put their
# running jobs back in the queue, or end them FAILED when no attempts remain. A rescued job
# keeps its run_at, so it goes back to its place in line, not behind the backlog that built up
# while it ran (its notification tells workers to read from there). Every worker runs this each
# second; it is idempotent. Waiters on jobs that ended FAILED are notified. The lost workers'
# jobs are found by `worker_id = ANY(ARRAY(...))`: with no worker lost (nearly always) that
# reads nothing, where a test against every running job would read each one, and each dead
# index entry an old snapshot keeps (50 ms a pass with 300,000 of them).
RESCUE_LOST_JOBS = _rescue(
    f"""WITH lost AS (
    SELECT w.id FROM pgqueue_workers AS w
    WHERE w.heartbeat_at < now() - %(heartbeat_timeout)s::float8 * interval '1 second'
       OR (GREATEST(w.heartbeat_at, pg_postmaster_start_time())
               < now() - %(lock_grace)s::float8 * interval '1 second'
           AND NOT EXISTS (
                SELECT 1 FROM pg_locks AS l
                WHERE l.locktype = 'advisory'
                  AND l.database = (SELECT oid FROM pg_database
                                    WHERE datname = current_database())
                  AND l.classid = {ADVISORY_LOCK_NAMESPACE}::oid
                  AND l.objid = w.id::oid
                  AND l.objsubid = 2
                  AND l.granted))
    FOR UPDATE SKIP LOCKED
), removed AS (
    DELETE FROM pgqueue_workers AS w USING lost WHERE w.id = lost.id
    RETURNING w.*
),""",
    "{j}.worker_id = ANY(ARRAY(SELECT id FROM removed))",
    # The lost workers are kept among the past workers, with the jobs taken back from them.
    _to_past_workers(
        "removed", "lost", "COALESCE((SELECT t.jobs FROM taken AS t WHERE t.worker_id = w.id), 0)"
    ),
)

# Running jobs whose worker row is gone without its jobs (a worker that exited without writing
# every outcome, a row deleted by hand) are rescued the same way. This reads every running job,
# so workers run it every ORPHAN_CHECK_INTERVAL seconds rather than each pass.
RESCUE_ORPHANED_JOBS = _rescue(
    "WITH",
    "NOT EXISTS (SELECT 1 FROM pgqueue_workers AS w WHERE w.id = {j}.worker_id)",
    # A worker that stopped without its jobs' outcomes written is among the past workers:
    # count them there.
    """UPDATE pgqueue_past_workers AS w SET rescued = w.rescued + t.jobs
    FROM taken AS t WHERE w.id = t.worker_id""",
)

# Lock-free test of whether this worker's session lock is still free to take (resume after a
# reconnect): pg_try_advisory_lock never blocks on a session that outlived its client.
TRY_LOCK_WORKER = f"SELECT pg_try_advisory_lock({ADVISORY_LOCK_NAMESPACE}, %(worker_id)s)"

# Cancel a job, in one statement whatever it is doing: a queued job (or a workflow step
# waiting for its parents) ends CANCELLED at once and
# its waiters are told; a running one is flagged and its worker told (the flag also stops any
# later retry or rescue). `locked` takes the row's lock and reads its latest version, so the
# decision follows the job's status as it is now, even when a claim, a retry or a rescue
# committed after this statement began (the other CTEs see the statement's snapshot; their
# join with `locked` decides). No row back: the job had finished, or does not exist; else
# `done` says which: 'cancelled' (it was queued) or 'requested' (it is running).
CANCEL_JOB = f"""
WITH locked AS (
    SELECT id, status FROM pgqueue_jobs WHERE id = %(id)s FOR UPDATE
), ended AS (
    DELETE FROM pgqueue_jobs AS j USING locked AS l
    WHERE j.id = l.id AND l.status IN ('queued', 'waiting')
    RETURNING j.*
), archived AS (
    {_archive("ended", "'cancelled'", _error("Cancelled", "CAST(%(message)s AS text)"))}
), asked AS (
    UPDATE pgqueue_jobs AS j SET cancel_requested_at = COALESCE(j.cancel_requested_at, now())
    FROM locked AS l
    WHERE j.id = l.id AND l.status = 'running'
    RETURNING j.id
)
SELECT id, pg_notify('{NOTIFY_FINISHED}', id::text)::text AS notified, 'cancelled' AS done
FROM archived
UNION ALL
SELECT id, pg_notify('{NOTIFY_CANCEL}', id::text)::text, 'requested' FROM asked
"""

# What the database says this worker holds: a worker compares it with what it runs, to find
# jobs whose claim committed but whose reply was lost with the connection.
JOBS_HELD_BY_WORKER = """
SELECT id, lease FROM pgqueue_jobs
WHERE worker_id = %(worker_id)s AND status = 'running'
  AND started_at < now() - %(min_age)s::float8 * interval '1 second'
"""

# A worker's backstop for cancel notifications it may have missed while reconnecting; it reads
# pgqueue_jobs_cancel_requested_idx (migration 0005), which holds only the jobs asked to stop.
CANCEL_REQUESTS_FOR_WORKER = """
SELECT id FROM pgqueue_jobs
WHERE worker_id = %(worker_id)s AND status = 'running' AND cancel_requested_at IS NOT NULL
"""

# Queued jobs past their deadline end CANCELLED (type Expired), even in queues no worker
# serves; waiters are told. Every worker runs this each second: the rows are found by
# `id = ANY(ARRAY(...))`, because as `id IN (...)`, on statistics taken while the queue was
# empty, the planner walked the whole primary key each time (30 ms with 50,000 jobs queued).
EXPIRE_QUEUED_JOBS = f"""
WITH ended AS (
    DELETE FROM pgqueue_jobs
    WHERE id = ANY(ARRAY(
        SELECT id FROM pgqueue_jobs
        WHERE status = 'queued' AND expires_at <= now()
        ORDER BY expires_at
        LIMIT 1000
        FOR UPDATE SKIP LOCKED))
    RETURNING *
), archived AS (
    {
    _archive(
        "ended",
        "'cancelled'",
        _error("Expired", "'not started before it expired at ' || e.expires_at::text"),
    )
}
)
SELECT id, task_name, pg_notify('{NOTIFY_FINISHED}', id::text)::text AS notified FROM archived
"""

# One job by id, for Job.refresh() and app.get_job(): it is in one of the two tables (one
# statement sees one snapshot, so a job moving between them is seen exactly once).
FETCH_JOB = f"""
SELECT {JOB_COLUMNS} FROM pgqueue_jobs WHERE id = %(id)s
UNION ALL
SELECT {JOB_COLUMNS} FROM pgqueue_finished_jobs WHERE id = %(id)s
"""

# Which of these jobs have not finished yet (Job.wait re-checks after each wake-up).
UNFINISHED_AMONG = "SELECT id FROM pgqueue_jobs WHERE id = ANY(%(ids)s::bigint[])"

# Which of these ids exist at all (so that waiting on a pruned job fails fast).
EXISTING_AMONG = """
SELECT id FROM pgqueue_jobs WHERE id = ANY(%(ids)s::bigint[])
UNION ALL
SELECT id FROM pgqueue_finished_jobs WHERE id = ANY(%(ids)s::bigint[])
"""

_PARAM = re.compile(r"%\((\w+)\)s")


@cache
def as_sqlalchemy(sql: str) -> str:
    """The same statement with SQLAlchemy's `:name` placeholders (and `%%` unescaped)."""
    return _PARAM.sub(r":\1", sql).replace("%%", "%")


def as_libpq(sql: str, names: Sequence[str]) -> str:
    """The same statement with libpq's `$n` placeholders, numbered in the order of `names`
    (which must name every parameter it has), and `%%` unescaped."""
    found = set(_PARAM.findall(sql))
    if found != set(names):
        raise ValueError(f"the statement's parameters are {sorted(found)}, not {list(names)}")
    return _PARAM.sub(lambda m: f"${names.index(m.group(1)) + 1}", sql).replace("%%", "%")


# -- migrations -----------------------------------------------------------------------------

# Serialise `pgqueue migrate` runs on one database (containers scaled up start it at once):
# held until the migration's transaction ends, so the next run sees the schema it left. The
# second key 0 is no worker's: worker ids start at 1.
LOCK_MIGRATIONS = f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_NAMESPACE}, 0)"

# -- periodic schedules ---------------------------------------------------------------------

# Add or update a schedule declared in code; an unchanged row is not rewritten, and a changed
# timing restarts from the new next fire time. The operator's enabled switch is left alone.
UPSERT_CODE_SCHEDULE = """
INSERT INTO pgqueue_periodic AS p (
    name, task_name, cron, every_seconds, tz, args, kwargs, queue, priority,
    catch_up, max_catch_up, source, declared, next_fire_at)
VALUES (
    %(name)s, %(task_name)s, %(cron)s, %(every_seconds)s, %(tz)s,
    CAST(%(args)s AS jsonb), CAST(%(kwargs)s AS jsonb), %(queue)s, %(priority)s,
    %(catch_up)s, %(max_catch_up)s, 'code', true, %(next_fire_at)s)
ON CONFLICT (name) DO UPDATE SET
    task_name = EXCLUDED.task_name, cron = EXCLUDED.cron,
    every_seconds = EXCLUDED.every_seconds, tz = EXCLUDED.tz, args = EXCLUDED.args,
    kwargs = EXCLUDED.kwargs, queue = EXCLUDED.queue, priority = EXCLUDED.priority,
    catch_up = EXCLUDED.catch_up, max_catch_up = EXCLUDED.max_catch_up,
    source = 'code', declared = true, updated_at = now(),
    next_fire_at = CASE
        WHEN (p.cron, p.every_seconds, p.tz)
             IS DISTINCT FROM (EXCLUDED.cron, EXCLUDED.every_seconds, EXCLUDED.tz)
        THEN EXCLUDED.next_fire_at ELSE p.next_fire_at END
WHERE (p.task_name, p.cron, p.every_seconds, p.tz, p.args, p.kwargs, p.queue, p.priority,
       p.catch_up, p.max_catch_up, p.source, p.declared)
      IS DISTINCT FROM
      (EXCLUDED.task_name, EXCLUDED.cron, EXCLUDED.every_seconds, EXCLUDED.tz, EXCLUDED.args,
       EXCLUDED.kwargs, EXCLUDED.queue, EXCLUDED.priority, EXCLUDED.catch_up,
       EXCLUDED.max_catch_up, 'code', true)
RETURNING name, (xmax = 0) AS inserted
"""

# Schedules removed from code stop firing but keep their row and history. Only schedules of
# tasks this app registers are considered, so apps sharing a database leave each other's alone.
UNDECLARE_REMOVED_SCHEDULES = """
UPDATE pgqueue_periodic SET declared = false, updated_at = now()
WHERE source = 'code' AND declared
  AND task_name = ANY(%(task_names)s::text[])
  AND NOT (name = ANY(%(names)s::text[]))
RETURNING name
"""

# A schedule added at run time (`pgqueue periodic add`).
INSERT_CLI_SCHEDULE = """
INSERT INTO pgqueue_periodic (
    name, task_name, cron, every_seconds, tz, args, kwargs, queue, priority,
    catch_up, max_catch_up, source, declared, next_fire_at)
VALUES (
    %(name)s, %(task_name)s, %(cron)s, %(every_seconds)s, %(tz)s,
    CAST(%(args)s AS jsonb), CAST(%(kwargs)s AS jsonb), %(queue)s, %(priority)s,
    %(catch_up)s, %(max_catch_up)s, 'cli', true, %(next_fire_at)s)
"""

# Schedules due now of the tasks the scheduler's app registers: another app's schedules (a
# service sharing the database, the new code in a rolling deploy) are left to schedulers that
# know their task's queue, priority and attempts. SKIP LOCKED spares concurrent schedulers
# duplicate work (the unique index on jobs, not this lock, is what guarantees one job per
# tick).
DUE_SCHEDULES = """
SELECT * FROM pgqueue_periodic
WHERE enabled AND (declared OR source = 'cli') AND next_fire_at <= %(now)s
  AND task_name = ANY(%(task_names)s::text[])
ORDER BY next_fire_at
LIMIT 100
FOR UPDATE SKIP LOCKED
"""

DUE_SCHEDULES_UNLOCKED = DUE_SCHEDULES.replace("FOR UPDATE SKIP LOCKED", "")

# One job for one tick: the tick's row, under its primary key, is inserted first, and a second
# insert for the same (schedule, fire time) makes no job. `run-now` jobs (no fire time) always
# insert.
INSERT_PERIODIC_JOB = f"""
WITH tick AS (
    INSERT INTO pgqueue_periodic_ticks (periodic_name, fire_at, job_id)
    SELECT %(periodic_name)s, CAST(%(fire_at)s AS timestamptz),
           nextval(pg_get_serial_sequence('pgqueue_jobs', 'id'))
    WHERE CAST(%(fire_at)s AS timestamptz) IS NOT NULL
    ON CONFLICT DO NOTHING
    RETURNING job_id
), job AS (
    INSERT INTO pgqueue_jobs (
        id, queue, task_name, args, kwargs, priority, max_attempts,
        periodic_name, periodic_fire_at, limited)
    SELECT
        COALESCE((SELECT job_id FROM tick),
                 nextval(pg_get_serial_sequence('pgqueue_jobs', 'id'))),
        %(queue)s, %(task_name)s, CAST(%(args)s AS jsonb), CAST(%(kwargs)s AS jsonb),
        %(priority)s, %(max_attempts)s, %(periodic_name)s, CAST(%(fire_at)s AS timestamptz),
        CAST(%(limited)s AS boolean)
    WHERE CAST(%(fire_at)s AS timestamptz) IS NULL OR EXISTS (SELECT 1 FROM tick)
    RETURNING id, queue, run_at, priority
)
SELECT id, pg_notify('{NOTIFY_ENQUEUED}', {_enqueued()})::text AS notified FROM job
"""

# Record what a scheduler pass did with a schedule.
UPDATE_SCHEDULE_AFTER_FIRE = """
UPDATE pgqueue_periodic
SET last_fire_at = GREATEST(last_fire_at, %(last_fire_at)s),
    last_job_id = COALESCE(%(job_id)s, last_job_id),
    next_fire_at = %(next_fire_at)s,
    updated_at = now()
WHERE name = %(name)s
"""

# Every schedule with its last job's status, for `pgqueue periodic list`; `overdue`: it
# should have fired over a minute ago (no scheduler that knows its task is running).
LIST_SCHEDULES = """
SELECT p.*, j.status::text AS last_job_status,
       p.next_fire_at < now() - interval '1 minute' AS overdue
FROM pgqueue_periodic AS p
LEFT JOIN pgqueue_all_jobs AS j ON j.id = p.last_job_id
ORDER BY p.name
"""

SET_SCHEDULE_ENABLED = """
UPDATE pgqueue_periodic SET enabled = %(enabled)s, updated_at = now() WHERE name = %(name)s
RETURNING name
"""

DELETE_CLI_SCHEDULE = "DELETE FROM pgqueue_periodic WHERE name = %(name)s RETURNING source"

GET_SCHEDULE = "SELECT * FROM pgqueue_periodic WHERE name = %(name)s"

# When the scheduler should look next: at its own app's schedules only, or an overdue
# schedule of another app's task would keep it looking at once, forever.
NEXT_DUE_IN = """
SELECT extract(epoch FROM min(next_fire_at) - now())::float8 FROM pgqueue_periodic
WHERE enabled AND (declared OR source = 'cli') AND task_name = ANY(%(task_names)s::text[])
"""

# Schedules that should have fired a while ago but have not, of tasks this scheduler's app
# does not register: most likely no running scheduler knows their task.
OVERDUE_FOREIGN_SCHEDULES = """
SELECT name, task_name, next_fire_at FROM pgqueue_periodic
WHERE enabled AND (declared OR source = 'cli')
  AND next_fire_at < now() - %(grace)s::float8 * interval '1 second'
  AND NOT (task_name = ANY(%(task_names)s::text[]))
ORDER BY name
"""

# -- retention ------------------------------------------------------------------------------

# Delete one batch of jobs that finished before the cutoff; workers pruning at once skip each
# other's rows. Small batches keep locks and WAL bursts short.
PRUNE_FINISHED_JOBS = """
DELETE FROM pgqueue_finished_jobs
WHERE id IN (
    SELECT id FROM pgqueue_finished_jobs
    WHERE finished_at < now() - %(older_than)s::float8 * interval '1 second'
      AND status = ANY(%(statuses)s::pgqueue_job_status[])
    ORDER BY finished_at
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
)
"""

# The periodic ticks past retention: their schedules have long moved on.
PRUNE_PERIODIC_TICKS = """
DELETE FROM pgqueue_periodic_ticks
WHERE fire_at < now() - %(older_than)s::float8 * interval '1 second'
"""

# -- outcome rollup -------------------------------------------------------------------------

# Add a worker's counts to the rows of the current 10-second bucket of the database's clock
# (rollup.BUCKET_SECONDS), one row per (queue, outcome): counts, sums and the histogram arrays
# element by element. Rows come sorted by (queue, outcome), so workers writing the same rows at
# once take their locks in one order and cannot deadlock.
FLUSH_STATS = """
INSERT INTO pgqueue_stats AS s
    (bucket, queue, outcome, count, wait_sum, wait_buckets, duration_sum, duration_buckets)
SELECT to_timestamp(floor(extract(epoch FROM now()) / 10) * 10),
       r.queue, r.outcome, r.count, r.wait_sum, r.wait_buckets, r.duration_sum,
       r.duration_buckets
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(
    queue text, outcome text, count bigint, wait_sum float8, wait_buckets bigint[],
    duration_sum float8, duration_buckets bigint[])
ORDER BY r.queue, r.outcome
ON CONFLICT (bucket, queue, outcome) DO UPDATE SET
    count = s.count + excluded.count,
    wait_sum = s.wait_sum + excluded.wait_sum,
    wait_buckets = ARRAY(
        SELECT coalesce(a, 0) + coalesce(b, 0)
        FROM unnest(s.wait_buckets, excluded.wait_buckets) WITH ORDINALITY AS u(a, b, i)
        ORDER BY i),
    duration_sum = s.duration_sum + excluded.duration_sum,
    duration_buckets = ARRAY(
        SELECT coalesce(a, 0) + coalesce(b, 0)
        FROM unnest(s.duration_buckets, excluded.duration_buckets) WITH ORDINALITY AS u(a, b, i)
        ORDER BY i)
"""

# One batch of workflows older than the cutoff whose steps have all been pruned (a workflow
# still holding one job, however old, is kept), with their steps' rows. With no workflows
# this reads an empty table.
PRUNE_WORKFLOWS = """
WITH gone AS (
    SELECT w.id FROM pgqueue_workflows AS w
    WHERE w.created_at < now() - %(older_than)s::float8 * interval '1 second'
      AND NOT EXISTS (
        SELECT FROM pgqueue_workflow_steps AS s
        WHERE s.workflow_id = w.id
          AND (EXISTS (SELECT FROM pgqueue_jobs AS j WHERE j.id = s.job_id)
               OR EXISTS (SELECT FROM pgqueue_finished_jobs AS f WHERE f.id = s.job_id)))
    ORDER BY w.created_at
    LIMIT 1000
    FOR UPDATE SKIP LOCKED
), steps AS (
    DELETE FROM pgqueue_workflow_steps AS s USING gone WHERE s.workflow_id = gone.id
)
DELETE FROM pgqueue_workflows AS w USING gone WHERE w.id = gone.id
"""

# Rollup rows past the 25 hours every reader looks back over (a range of the primary key).
PRUNE_STATS = "DELETE FROM pgqueue_stats WHERE bucket < now() - interval '25 hours'"

# Workers that stopped or were lost more than a day ago.
PRUNE_PAST_WORKERS = """
DELETE FROM pgqueue_past_workers WHERE ended_at < now() - interval '1 day'
"""

# -- operations (pgqueue.admin) --------------------------------------------------------------


def _retry_finished(picked: str) -> str:
    """A statement that runs finished jobs again under their own ids: the jobs whose ids the
    array `picked` holds, if they failed or were cancelled, move back from
    pgqueue_finished_jobs to pgqueue_jobs, queued and due now, with no attempt counted and no
    deadline; their final attempt (error, worker, times) is appended to their history. Workers
    are told where they sort (one notification per queue and priority).

    A job with a unique key takes it back if no job that would hold it now does (a queued or
    running one for `unique_key`, a queued one for `queued_key`), and it is the first of the
    batch by id to have it; otherwise it runs again without one, so that an operator's retry
    never fails on, nor replaces, the job that holds the key now."""
    return f"""
WITH moved AS (
    DELETE FROM pgqueue_finished_jobs AS f
    WHERE f.id = ANY({picked}) AND f.status IN ('failed', 'cancelled')
      -- A workflow step cancelled because a step before it failed never got its parents'
      -- results: run alone, it would run with the wrong arguments.
      AND (f.error ->> 'type') IS DISTINCT FROM 'DependencyFailed'
    RETURNING f.*
), keyed AS (
    -- A job has one key or the other, never both.
    SELECT m.id, row_number() OVER (PARTITION BY m.unique_key, m.queued_key ORDER BY m.id) = 1
        AND NOT EXISTS (
            SELECT FROM pgqueue_jobs AS j
            WHERE j.unique_key = m.unique_key AND j.status IN ('queued', 'running'))
        AND NOT EXISTS (
            SELECT FROM pgqueue_jobs AS j WHERE j.queued_key = m.queued_key AND j.status = 'queued'
        ) AS keeps_key
    FROM moved AS m
    WHERE m.unique_key IS NOT NULL OR m.queued_key IS NOT NULL
), requeued AS (
    INSERT INTO pgqueue_jobs (
        id, queue, task_name, args, kwargs, status, priority, run_at, attempts, max_attempts,
        created_at, periodic_name, periodic_fire_at, history, headers, unique_key, queued_key,
        concurrency_key, limited, workflow_id)
    SELECT m.id, m.queue, m.task_name, m.args, m.kwargs, 'queued', m.priority, now(), 0,
        m.max_attempts, m.created_at, m.periodic_name, m.periodic_fire_at,
        {_with_attempt("m", "m.status::text", "m.error", "m.finished_at")}, m.headers,
        CASE WHEN (SELECT k.keeps_key FROM keyed AS k WHERE k.id = m.id) THEN m.unique_key END,
        CASE WHEN (SELECT k.keeps_key FROM keyed AS k WHERE k.id = m.id) THEN m.queued_key END,
        m.concurrency_key,
        -- A job of a task with limits now is limited again, whatever it was when it ended.
        (SELECT true FROM pgqueue_limits AS l WHERE l.name = m.task_name),
        m.workflow_id
    FROM moved AS m
    RETURNING id, queue, run_at, priority
)
SELECT r.id, pg_notify('{NOTIFY_ENQUEUED}', {_enqueued("r")})::text AS notified
FROM requeued AS r
"""


# Run these finished jobs again (`pgqueue jobs retry ID...`); a job that did not fail and was
# not cancelled is left alone and not returned.
RETRY_JOBS = _retry_finished("%(ids)s::bigint[]")

# Run one batch of failed jobs again (`pgqueue jobs retry --failed`), the next `batch` by id
# after `after`, of one task and queue and finished within `since` seconds when given. Read
# through the partial index of unsuccessful jobs, so millions of successes cost nothing.
RETRY_FAILED_JOBS = _retry_finished(
    """ARRAY(
        SELECT id FROM pgqueue_finished_jobs
        WHERE status = 'failed' AND id > %(after)s
          AND (CAST(%(task)s AS text) IS NULL OR task_name = %(task)s)
          AND (CAST(%(queue)s AS text) IS NULL OR queue = %(queue)s)
          AND (CAST(%(since)s AS float8) IS NULL
               OR finished_at >= now() - CAST(%(since)s AS float8) * interval '1 second')
        ORDER BY id
        LIMIT %(batch)s
        FOR UPDATE SKIP LOCKED)"""
)

# Delete finished jobs; a job still queued or running is left alone and not returned.
DELETE_FINISHED_JOBS = """
DELETE FROM pgqueue_finished_jobs WHERE id = ANY(%(ids)s::bigint[])
RETURNING id, status::text
"""

# Where these jobs are now (the second look of every action on jobs: it tells a job in the
# wrong state from one that does not exist).
JOB_STATES = """
SELECT id, status::text FROM pgqueue_jobs WHERE id = ANY(%(ids)s::bigint[])
UNION ALL
SELECT id, status::text FROM pgqueue_finished_jobs WHERE id = ANY(%(ids)s::bigint[])
"""

# Whether anything knows this queue: a worker serving it now or in the last day, a job waiting
# in it, a schedule firing into it, or an earlier pause. (Finished jobs are not searched: they
# have no index by queue.)
QUEUE_KNOWN = """
SELECT EXISTS (SELECT FROM pgqueue_workers WHERE %(name)s = ANY(queues))
    OR EXISTS (
        SELECT FROM pgqueue_jobs WHERE queue = %(name)s AND status = 'queued' AND limited IS NULL)
    OR EXISTS (SELECT FROM pgqueue_jobs WHERE queue = %(name)s AND status = 'queued' AND limited)
    OR EXISTS (SELECT FROM pgqueue_periodic WHERE queue = %(name)s)
    OR EXISTS (SELECT FROM pgqueue_queues WHERE name = %(name)s)
    OR EXISTS (SELECT FROM pgqueue_past_workers WHERE %(name)s = ANY(queues))
"""

# Pause a queue (the claim statement skips it from this commit on, on every worker); pausing
# a paused queue changes nothing. One row back: whether this statement paused it, and since
# when and by whom it is paused.
PAUSE_QUEUE = """
WITH paused AS (
    INSERT INTO pgqueue_queues AS q (name, paused_at, paused_by, updated_at)
    VALUES (%(name)s, now(), %(by)s, now())
    ON CONFLICT (name) DO UPDATE
    SET paused_at = now(), paused_by = EXCLUDED.paused_by, updated_at = now()
    WHERE q.paused_at IS NULL
    RETURNING paused_at, paused_by
)
SELECT true AS changed, paused_at, paused_by FROM paused
UNION ALL
SELECT false, paused_at, paused_by FROM pgqueue_queues
WHERE name = %(name)s AND NOT EXISTS (SELECT FROM paused)
"""

# Resume a paused queue, and wake every worker that serves it to read it from its start: one
# notification per priority that has jobs waiting, for the first of them (what an enqueue of
# that job would send), so that each worker moves its position in every priority back before
# every waiting job (see claim.rewind). The first job of each priority is found by one index
# lookup per priority, however long the backlog (jobs of limited tasks are claimed by task,
# not from positions: they need none). No row back: the queue was not paused.
RESUME_QUEUE = f"""
WITH RECURSIVE resumed AS (
    UPDATE pgqueue_queues SET paused_at = NULL, paused_by = NULL, updated_at = now()
    WHERE name = %(name)s AND paused_at IS NOT NULL
    RETURNING name
), head AS (
    (SELECT queue, priority, run_at FROM pgqueue_jobs
     WHERE queue = %(name)s AND status = 'queued' AND limited IS NULL
     ORDER BY priority DESC, run_at, id
     LIMIT 1)
    UNION ALL
    SELECT n.queue, n.priority, n.run_at
    FROM head AS h
    CROSS JOIN LATERAL (
        SELECT queue, priority, run_at FROM pgqueue_jobs
        WHERE queue = %(name)s AND status = 'queued' AND limited IS NULL
          AND priority < h.priority
        ORDER BY priority DESC, run_at, id
        LIMIT 1
    ) AS n
)
SELECT r.name, (
    SELECT count(pg_notify('{NOTIFY_ENQUEUED}', {_enqueued("h")})::text) FROM head AS h
) AS notified
FROM resumed AS r
"""

# -- unique jobs -----------------------------------------------------------------------------

# What an insert of a keyed job meets when a job holds its key: the partial unique index
# pgqueue_jobs_unique_key_idx over queued and running jobs, or, for a job unique only while
# queued, pgqueue_jobs_queued_key_idx over queued jobs (the predicate names the index).
_UNIQUE_CONFLICT = (
    "ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND status IN ('queued', 'running')"
)
_QUEUED_UNIQUE_CONFLICT = (
    "ON CONFLICT (queued_key) WHERE queued_key IS NOT NULL AND status = 'queued'"
)


def _insert_unique(on_conflict: str, *, period: bool = False, queued: bool = False) -> str:
    """An INSERT of keyed jobs that share their options (the parameters of INSERT_JOB) and
    differ in key, args and kwargs (`rows`, a JSON array of objects, one key each), with
    `on_conflict` for a key that a queued or running job holds (with `queued`: a queued job,
    the key being written to `queued_key`). Each job written (inserted, or replaced: `created`
    tells) comes back whole, and workers are told where it sorts. Rows come sorted by key, so
    that enqueuers of overlapping keys wait for each other in one order and cannot deadlock.
    With `period`, only the keys that the CTE `period` returns are inserted, under the ids it
    drew."""
    return f"""
INSERT INTO pgqueue_jobs AS j (
    {"id, " if period else ""}queue, task_name, args, kwargs, priority, run_at, max_attempts,
    expires_at, headers, {"queued_key" if queued else "unique_key"}, limited, concurrency_key)
SELECT
    {"period.job_id, " if period else ""}%(queue)s, %(task_name)s, r.args, r.kwargs, %(priority)s,
    {_DUE_AT},
    %(max_attempts)s,
    {_EXPIRES_AT},
    CAST(%(headers)s AS jsonb), r.unique_key, CAST(%(limited)s AS boolean),
    CAST(%(concurrency_key)s AS text)
FROM jsonb_to_recordset(CAST(%(rows)s AS jsonb)) AS r(unique_key text, args jsonb, kwargs jsonb)
{"JOIN period ON period.unique_key = r.unique_key" if period else ""}
{_QUEUED_UNIQUE_CONFLICT if queued else _UNIQUE_CONFLICT} {on_conflict}
RETURNING {JOB_COLUMNS}, (xmax = 0) AS created,
    pg_notify('{NOTIFY_ENQUEUED}', {_enqueued()})::text AS notified
"""


# Keyed jobs; a key already held returns nothing (FIND_UNIQUE_HOLDERS then reads the holder).
INSERT_UNIQUE_JOBS = _insert_unique("DO NOTHING")
# The same for keys held while queued only (`unique_states=("queued",)`): a job of the key
# that runs holds nothing.
INSERT_QUEUED_UNIQUE_JOBS = _insert_unique("DO NOTHING", queued=True)

_REPLACE = """DO UPDATE SET
    queue = EXCLUDED.queue, task_name = EXCLUDED.task_name, args = EXCLUDED.args,
    kwargs = EXCLUDED.kwargs, priority = EXCLUDED.priority, run_at = EXCLUDED.run_at,
    max_attempts = EXCLUDED.max_attempts, expires_at = EXCLUDED.expires_at,
    headers = EXCLUDED.headers, limited = EXCLUDED.limited,
    concurrency_key = EXCLUDED.concurrency_key
WHERE j.status = 'queued' AND j.cancel_requested_at IS NULL"""

# Keyed jobs that replace the queued job holding their key (`on_conflict="replace"`): its task,
# arguments, due time, priority, expiry, headers and limits become the new ones; it keeps its
# id, its attempts and its place among the jobs. A running holder is left alone and not
# returned.
INSERT_OR_REPLACE_UNIQUE_JOBS = _insert_unique(_REPLACE)
# The same for keys held while queued only: only a queued job holds the key, so a job of the
# key that runs meanwhile is no holder, and a new job is inserted (if a claim takes the
# holder while this statement waits on it, the insert is tried again and goes in).
INSERT_OR_REPLACE_QUEUED_UNIQUE_JOBS = _insert_unique(_REPLACE, queued=True)


# Keyed jobs with a period (`unique_for=`), in one statement: each key's period is taken (a
# new row, or a row whose period ran out) for a job id drawn here, and only the keys taken are
# inserted, under those ids. A key whose period has not run out is not returned (read it with
# HELD_PERIODS). Enqueuers of one key take turns on its period row (ON CONFLICT waits for the
# transaction that wrote it, and the DO UPDATE decides on the row as that one committed it).
# When a queued or running job holds the key although its period ran out, the insert meets it
# and the period names a job that was never written: the holder is returned by
# FIND_UNIQUE_HOLDERS, and such a period is released by RELEASE_PERIODS when it is next met.
def _insert_unique_for_period(*, queued: bool) -> str:
    """The statement above, for keys held while queued only with `queued`."""
    return f"""
WITH period AS (
    INSERT INTO pgqueue_unique_periods AS p (unique_key, job_id, until)
    SELECT r.unique_key, nextval(pg_get_serial_sequence('pgqueue_jobs', 'id')),
           now() + CAST(%(period)s AS float8) * interval '1 second'
    FROM jsonb_to_recordset(CAST(%(rows)s AS jsonb)) AS r(unique_key text)
    ON CONFLICT (unique_key) DO UPDATE SET job_id = EXCLUDED.job_id, until = EXCLUDED.until
    WHERE p.until <= now()
    RETURNING p.unique_key, p.job_id
)
{_insert_unique("DO NOTHING", period=True, queued=queued)}"""


INSERT_UNIQUE_JOBS_FOR_PERIOD = _insert_unique_for_period(queued=False)
# The same for keys held while queued only; the period of a key is one, whatever the states
# its enqueues name.
INSERT_QUEUED_UNIQUE_JOBS_FOR_PERIOD = _insert_unique_for_period(queued=True)

# The periods of these keys that have not run out, and the jobs they name.
HELD_PERIODS = """
SELECT unique_key, job_id FROM pgqueue_unique_periods
WHERE unique_key = ANY(CAST(%(keys)s AS text[])) AND until > now()
"""

# Release periods whose job does not exist (never written, or deleted since): they hold
# nothing. Only if the period still names that job: one taken since by another enqueue stays.
RELEASE_PERIODS = """
UPDATE pgqueue_unique_periods AS p SET until = '-infinity'
FROM unnest(CAST(%(keys)s AS text[]), CAST(%(job_ids)s AS bigint[])) AS g(unique_key, job_id)
WHERE p.unique_key = g.unique_key AND p.job_id = g.job_id
RETURNING p.unique_key
"""

# The queued or running jobs that hold these keys.
FIND_UNIQUE_HOLDERS = f"""
SELECT {JOB_COLUMNS}, false AS created FROM pgqueue_jobs
WHERE unique_key = ANY(CAST(%(keys)s AS text[])) AND status IN ('queued', 'running')
"""

# The queued jobs that hold these keys held while queued only.
FIND_QUEUED_UNIQUE_HOLDERS = f"""
SELECT {JOB_COLUMNS}, false AS created FROM pgqueue_jobs
WHERE queued_key = ANY(CAST(%(keys)s AS text[])) AND status = 'queued'
"""

# Jobs by id, wherever they are (the jobs holding a period).
FETCH_JOBS = f"""
SELECT {JOB_COLUMNS}, false AS created FROM pgqueue_jobs WHERE id = ANY(CAST(%(ids)s AS bigint[]))
UNION ALL
SELECT {JOB_COLUMNS}, false FROM pgqueue_finished_jobs WHERE id = ANY(CAST(%(ids)s AS bigint[]))
"""

# Periods that ran out a while ago (the next enqueue of their key would reuse the row anyway).
PRUNE_UNIQUE_PERIODS = """
DELETE FROM pgqueue_unique_periods
WHERE until < now() - %(older_than)s::float8 * interval '1 second'
"""

# -- bulk enqueue -----------------------------------------------------------------------------

# Reserve ids for a COPY (which cannot RETURN them) and read the database's clock once, so
# countdowns and expiries are measured on it. The sequence is looked up once (a scalar
# subquery), not once per id: that was 6 times slower.
RESERVE_JOB_IDS = """
WITH seq AS MATERIALIZED (
    SELECT pg_get_serial_sequence('pgqueue_jobs', 'id')::regclass AS name
)
SELECT now(), array(
    SELECT nextval((SELECT name FROM seq)) FROM generate_series(1, %(n)s)
)
"""

COPY_JOBS = (
    "COPY pgqueue_jobs (id, args, kwargs, queue, task_name, priority, run_at, max_attempts, "
    "expires_at) FROM STDIN"
)
# The same for jobs with headers (every job of one call shares them); jobs without send no
# column for them.
COPY_JOBS_WITH_HEADERS = COPY_JOBS.replace("expires_at)", "expires_at, headers)")
# The same for jobs of a task with limits (every job of one call shares its concurrency key).
COPY_LIMITED_JOBS = COPY_JOBS.replace("expires_at)", "expires_at, limited, concurrency_key)")
COPY_LIMITED_JOBS_WITH_HEADERS = COPY_JOBS.replace(
    "expires_at)", "expires_at, headers, limited, concurrency_key)"
)

# One wake-up for a bulk insert (delivered on commit); the payload is built as _enqueued's, for
# the first of the jobs (they share queue, priority and run_at).
NOTIFY_ENQUEUED_PAYLOAD = f"SELECT pg_notify('{NOTIFY_ENQUEUED}', %(payload)s)"

# -- fleet-wide limits (pgqueue.limits) ------------------------------------------------------

# Where the queue column of CLAIM_LIMITED_JOBS's last row says that row is not a job: it
# carries, as its `wait`, the seconds until a spent rate frees a place (queue names hold no @).
LIMITS_ROW = "@limits"

# A task's declared limits, written when a worker starts; the start times a rate keeps are
# left as they are.
UPSERT_LIMIT = """
INSERT INTO pgqueue_limits AS l (name, rate, per_seconds, concurrency, key_concurrency)
VALUES (%(name)s, %(rate)s, %(per_seconds)s, %(concurrency)s, %(key_concurrency)s)
ON CONFLICT (name) DO UPDATE SET
    rate = EXCLUDED.rate, per_seconds = EXCLUDED.per_seconds,
    concurrency = EXCLUDED.concurrency, key_concurrency = EXCLUDED.key_concurrency,
    updated_at = now()
WHERE (l.rate, l.per_seconds, l.concurrency, l.key_concurrency)
      IS DISTINCT FROM
      (EXCLUDED.rate, EXCLUDED.per_seconds, EXCLUDED.concurrency, EXCLUDED.key_concurrency)
"""

# The limits of tasks that declare none any more.
DELETE_LIMITS = "DELETE FROM pgqueue_limits WHERE name = ANY(%(names)s::text[])"

# Jobs of tasks whose limits were removed become plain jobs; workers are told where they sort
# (they may sort before where their claims got to).
UNMARK_LIMITED_JOBS = f"""
WITH unmarked AS (
    UPDATE pgqueue_jobs SET limited = NULL
    WHERE status = 'queued' AND limited AND task_name = ANY(%(names)s::text[])
    RETURNING queue, run_at, priority
)
SELECT count(pg_notify('{NOTIFY_ENQUEUED}', {_enqueued("u")})) FROM (
    SELECT DISTINCT ON (queue, priority) queue, run_at, priority FROM unmarked
    ORDER BY queue, priority, run_at
) AS u
"""

# The first step of a limited claim: lock the limits' rows. A limit another worker is
# claiming is skipped, not waited for; the claim statement that follows, in the same
# transaction, starts after the lock is held, so it sees every claim made under it before.
# The claim connection plans against sorts (HOT_PATH_SETTINGS), which would only make the
# limited claim's few small sorts look costly enough to be compiled by JIT (a second each):
# they are allowed again, and JIT is off, until this transaction ends.
LOCK_LIMITS = """
WITH settings AS MATERIALIZED (
    SELECT set_config('enable_sort', 'on', true), set_config('jit', 'off', true)
)
SELECT l.name FROM pgqueue_limits AS l, settings
WHERE l.name = ANY(%(names)s::text[])
ORDER BY l.name
FOR UPDATE OF l SKIP LOCKED
"""

_COUNTED_LIMITS = """
, counted AS (
    SELECT a.name, a.rate, a.per_seconds, a.recent, count(c.id)::int AS taken
    FROM allowed AS a LEFT JOIN claimed AS c ON c.task_name = a.name
    WHERE a.rate IS NOT NULL
    GROUP BY a.name, a.rate, a.per_seconds, a.recent
), recorded AS (
    UPDATE pgqueue_limits AS l
    SET recent = c.recent || array_fill(statement_timestamp(), ARRAY[c.taken])
    FROM counted AS c
    WHERE l.name = c.name AND c.taken > 0
)"""

_NEXT_PLACE_ROW = f"""
UNION ALL
SELECT NULL, '{LIMITS_ROW}', NULL, NULL, NULL, 0, 0, 0, NULL, NULL, NULL,
       (SELECT min(extract(epoch FROM
                   COALESCE(c.recent[1], statement_timestamp())
                   + c.per_seconds * interval '1 second' - statement_timestamp()))::float8
        FROM counted AS c WHERE cardinality(c.recent) + c.taken >= c.rate),
       NULL, false, NULL"""

# Claim up to `limit` due jobs of the limited tasks `names` (their rows locked by LOCK_LIMITS)
# in the given queues, at most what each limit allows now: its rate minus the jobs it started
# in the last period (`recent`, kept sorted, trimmed here), its concurrency minus the task's
# running jobs, and per key its key concurrency minus the key's running jobs (the jobs of a
# full key are passed over, not waited behind). Running jobs are counted through
# pgqueue_jobs_limited_running_idx: a job frees its place when it leaves the running state, by
# whatever path. Jobs start at statement_timestamp(), the time the rate records: statements of
# successive claims of one limit start in lock order, so the recorded times only grow. The
# last row (LIMITS_ROW) says when the first spent rate frees a place.
CLAIM_LIMITED_JOBS = f"""
WITH served AS (
    -- A paused queue is not read, as in CLAIM_JOBS.
    SELECT ARRAY(
        SELECT q FROM unnest(%(queues)s::text[]) AS q
        WHERE NOT EXISTS (
            SELECT FROM pgqueue_queues AS p WHERE p.name = q AND p.paused_at IS NOT NULL)
    ) AS queues
), lim AS (
    SELECT l.name, l.rate, l.per_seconds, l.concurrency, l.key_concurrency,
           ARRAY(SELECT t FROM unnest(l.recent) AS t
                 WHERE t > statement_timestamp() - l.per_seconds * interval '1 second'
                 ORDER BY t) AS recent,
           CASE WHEN l.concurrency IS NULL THEN 0 ELSE (
               SELECT count(*) FROM pgqueue_jobs AS r
               WHERE r.status = 'running' AND r.limited AND r.task_name = l.name) END AS running
    FROM pgqueue_limits AS l
    WHERE l.name = ANY(%(names)s::text[])
), allowed AS (
    SELECT lim.*, GREATEST(LEAST(
        %(limit)s,
        COALESCE(lim.rate - cardinality(lim.recent), %(limit)s),
        COALESCE(lim.concurrency - lim.running, %(limit)s)), 0) AS n
    FROM lim
), candidate AS (
    SELECT c.*, a.key_concurrency,
           row_number() OVER (PARTITION BY c.task_name, c.concurrency_key
                              ORDER BY c.priority DESC, c.run_at, c.id) AS nth
    FROM allowed AS a
    CROSS JOIN LATERAL (
        SELECT j.id, j.task_name, j.priority, j.run_at, j.concurrency_key,
               (j.cancel_requested_at IS NOT NULL OR j.expires_at <= now()) IS TRUE AS dead
        FROM pgqueue_jobs AS j
        WHERE j.status = 'queued' AND j.limited AND j.task_name = a.name
          AND j.queue = ANY((SELECT queues FROM served)::text[]) AND j.run_at <= now()
          AND (a.key_concurrency IS NULL OR j.concurrency_key IS NULL
               OR (SELECT count(*) FROM pgqueue_jobs AS r
                   WHERE r.status = 'running' AND r.limited AND r.task_name = a.name
                     AND r.concurrency_key = j.concurrency_key) < a.key_concurrency)
        ORDER BY j.priority DESC, j.run_at, j.id
        LIMIT a.n
        FOR UPDATE SKIP LOCKED
    ) AS c
), picked AS (
    -- One claim may pick several jobs of one key: only as many as the key has places.
    SELECT c.id, c.dead FROM candidate AS c
    WHERE c.key_concurrency IS NULL OR c.concurrency_key IS NULL OR c.dead
       OR c.nth + (SELECT count(*) FROM pgqueue_jobs AS r
                   WHERE r.status = 'running' AND r.limited AND r.task_name = c.task_name
                     AND r.concurrency_key = c.concurrency_key) <= c.key_concurrency
    ORDER BY c.priority DESC, c.run_at, c.id
    LIMIT %(limit)s
{_claim_tail("statement_timestamp()", _COUNTED_LIMITS, _NEXT_PLACE_ROW)}
"""

# Every limit, with the jobs it holds now: `pgqueue limits`.
LIST_LIMITS = """
SELECT l.name, l.rate, l.per_seconds, l.concurrency, l.key_concurrency,
       (SELECT count(*) FROM unnest(l.recent) AS t
        WHERE t > now() - l.per_seconds * interval '1 second') AS started_in_period,
       (SELECT count(*) FROM pgqueue_jobs AS r
        WHERE r.status = 'running' AND r.limited AND r.task_name = l.name) AS running,
       (SELECT count(*) FROM pgqueue_jobs AS q
        WHERE q.status = 'queued' AND q.limited AND q.task_name = l.name) AS queued
FROM pgqueue_limits AS l
ORDER BY l.name
"""

# -- workflows (pgqueue.workflows) ------------------------------------------------------------

# A workflow's id and one job id per step, in order (parents before children, so a child's id
# is above its parents': the locks a workflow's statements take follow the ids).
RESERVE_WORKFLOW_IDS = """
SELECT nextval(pg_get_serial_sequence('pgqueue_workflows', 'id')), array(
    SELECT nextval(pg_get_serial_sequence('pgqueue_jobs', 'id')) FROM generate_series(1, %(n)s)
)
"""

# Write a whole workflow in one statement: its row, its steps as jobs (those without parents
# queued, the others waiting, counting their parents), what each step takes at release, and
# the edges. Workers are told of the queued ones (on commit). Casts are spelled CAST(... AS
# ...): this statement also runs through SQLAlchemy.
INSERT_WORKFLOW = f"""
WITH workflow AS (
    INSERT INTO pgqueue_workflows (id, tree) VALUES (%(workflow_id)s, CAST(%(tree)s AS jsonb))
), step AS (
    SELECT * FROM jsonb_to_recordset(CAST(%(steps)s AS jsonb)) AS s(
        id bigint, queue text, task_name text, args jsonb, kwargs jsonb, priority int,
        max_attempts int, waiting_for int, delay float8, eta timestamptz,
        expires_at timestamptz, expires_in float8, headers jsonb, takes_result boolean,
        role text, limited boolean, concurrency_key text)
), job AS (
    INSERT INTO pgqueue_jobs (
        id, queue, task_name, args, kwargs, status, priority, run_at, max_attempts,
        expires_at, headers, workflow_id, waiting_for, limited, concurrency_key)
    SELECT s.id, s.queue, s.task_name, s.args, s.kwargs,
        CAST(CASE WHEN s.waiting_for > 0 THEN 'waiting' ELSE 'queued' END
             AS pgqueue_job_status),
        s.priority,
        CASE WHEN s.waiting_for > 0 THEN now()
             ELSE GREATEST(COALESCE(s.eta, now()), now() + s.delay * interval '1 second') END,
        s.max_attempts,
        COALESCE(s.expires_at, now() + s.expires_in * interval '1 second'),
        s.headers, %(workflow_id)s, NULLIF(s.waiting_for, 0),
        -- Limited if the enqueuing app's task has limits, or if the fleet declared some for
        -- it (a step named by an app that does not register the task).
        CASE WHEN s.limited OR EXISTS (SELECT FROM pgqueue_limits AS l WHERE l.name = s.task_name)
             THEN true END,
        s.concurrency_key
    FROM step AS s
    ORDER BY s.id
    RETURNING id, queue, run_at, priority, status, created_at
), steps AS (
    INSERT INTO pgqueue_workflow_steps (job_id, workflow_id, role, takes_result, delay, eta)
    SELECT s.id, %(workflow_id)s, s.role, s.takes_result, s.delay, s.eta FROM step AS s
), edges AS (
    INSERT INTO pgqueue_dependencies (parent_id, child_id, kind, position)
    SELECT e.parent_id, e.child_id, e.kind, e.position
    FROM jsonb_to_recordset(CAST(%(edges)s AS jsonb)) AS e(
        parent_id bigint, child_id bigint, kind text, position int)
)
SELECT j.id, j.created_at,
    CASE WHEN j.status = 'queued'
         THEN pg_notify('{NOTIFY_ENQUEUED}', {_enqueued("j")})::text END AS notified
FROM job AS j
ORDER BY j.id
"""

# A workflow's row.
FETCH_WORKFLOW = "SELECT id, tree, created_at FROM pgqueue_workflows WHERE id = %(id)s"

# Every job of a workflow with its role, in step order; a job moving between the two tables
# is seen once (one statement, one snapshot).
WORKFLOW_JOBS = f"""
SELECT j.*, s.role FROM (
    SELECT {JOB_COLUMNS} FROM pgqueue_jobs
    WHERE id = ANY(ARRAY(
        SELECT job_id FROM pgqueue_workflow_steps WHERE workflow_id = %(id)s))
    UNION ALL
    SELECT {JOB_COLUMNS} FROM pgqueue_finished_jobs
    WHERE id = ANY(ARRAY(
        SELECT job_id FROM pgqueue_workflow_steps WHERE workflow_id = %(id)s))
) AS j
JOIN pgqueue_workflow_steps AS s ON s.job_id = j.id
ORDER BY j.id
"""

# Cancel a workflow: its steps that have not started end CANCELLED at once (the trigger then
# releases its link_error callback, once), the running ones are asked to stop (their
# dependents are cancelled already). Its jobs, link_error callbacks included, are locked in id
# order first: a step that ends meanwhile locks its own row, then its callback's and its
# children's (higher ids), so the two cannot wait for each other. `locked` reads each row's
# latest version, so a step released or claimed meanwhile is judged as it is now.
CANCEL_WORKFLOW = f"""
WITH locked AS (
    SELECT j.id, j.status, s.role
    FROM pgqueue_jobs AS j JOIN pgqueue_workflow_steps AS s ON s.job_id = j.id
    WHERE j.id = ANY(ARRAY(
        SELECT job_id FROM pgqueue_workflow_steps WHERE workflow_id = %(id)s))
    ORDER BY j.id
    FOR UPDATE OF j
), ended AS (
    DELETE FROM pgqueue_jobs AS j USING locked AS l
    WHERE j.id = l.id AND l.status IN ('queued', 'waiting') AND l.role = 'step'
    RETURNING j.*
), archived AS (
    {_archive("ended", "'cancelled'", _error("Cancelled", "CAST(%(message)s AS text)"))}
), asked AS (
    UPDATE pgqueue_jobs AS j SET cancel_requested_at = COALESCE(j.cancel_requested_at, now())
    FROM locked AS l
    WHERE j.id = l.id AND l.status = 'running' AND l.role = 'step'
    RETURNING j.id
)
SELECT id, pg_notify('{NOTIFY_FINISHED}', id::text)::text AS notified, 'cancelled' AS done
FROM archived
UNION ALL
SELECT id, pg_notify('{NOTIFY_CANCEL}', id::text)::text, 'requested' FROM asked
"""
