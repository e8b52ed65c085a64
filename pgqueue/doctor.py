"""`pgqueue doctor`'s checks: each looks at one thing that makes a queue slow or stuck and returns
a Finding: PASS, WARN or FAIL, what it found, and what that means and what to do.

The checks read through pgqueue.inspect and never change anything. `run_checks` runs them all
on one connection; a check that cannot run (a lost connection, a schema too old for its query)
becomes a finding of its own, so one broken check never hides the others. Thresholds are
options (`Thresholds`), with defaults for a production fleet.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from pgqueue import revisions
from pgqueue._names import HOT_TABLE
from pgqueue.config import WorkerSettings
from pgqueue.errors import PgQueueError
from pgqueue.inspect import server, stuck
from pgqueue.periodic import UNFIRED_GRACE

Conn = psycopg.Connection[Any]

# The oldest major version pgqueue's migrations run on (0004 sets an autovacuum option that
# PostgreSQL 13 introduced), and the ones its test suite runs on.
MINIMUM_SERVER_MAJOR = 13
TESTED_SERVER_MAJORS = (15, 16)

MIB = 1024 * 1024


class Level(str, enum.Enum):
    """How a finding bears on the queue: PASS (fine), WARN (look soon), FAIL (act now)."""

    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"

    @property
    def rank(self) -> int:
        return ("PASS", "WARN", "FAIL").index(self.value)


@dataclass(frozen=True)
class Finding:
    """One check's answer. `found` says what is there; `advice` what it means and what to do
    (empty when all is well); `data` carries the same facts as values, for scripts."""

    level: Level
    check: str
    found: str
    advice: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Thresholds:
    """When a check warns or fails; durations in seconds, fractions between 0 and 1."""

    # A transaction or prepared transaction holding the xmin horizon this long.
    xmin_warn: float = 300.0
    xmin_fail: float = 3600.0
    # Any holder whose oldest row version is this many transactions old (towards wraparound:
    # autovacuum_freeze_max_age is 200 million by default).
    xid_age_warn: int = 10_000_000
    xid_age_fail: int = 100_000_000
    # Dead row versions in the hot table (when there are more than live ones).
    dead_tuples_warn: int = 50_000
    dead_tuples_fail: int = 1_000_000
    # The hot table with its indexes this large, and this many bytes for each live row.
    hot_table_bytes_warn: int = 256 * MIB
    bytes_per_row_warn: int = 64 * 1024
    # No vacuum of the hot table for this long, while it has dead_tuples_warn dead rows.
    vacuum_stale: float = 3600.0
    # A running job past its task's timeout by this much; any running job this long.
    overrun_grace: float = 30.0
    running_warn: float = 3600.0
    # A worker silent this long (the workers' own default for declaring one lost).
    heartbeat_timeout: float = WorkerSettings.heartbeat_timeout
    # A schedule this late (a scheduler fires a tick within about a second of it).
    schedule_warn: float = UNFIRED_GRACE.total_seconds()
    schedule_fail: float = 3600.0
    # The NOTIFY queue this full.
    notify_warn: float = 0.01
    notify_fail: float = 0.5
    # Connections in use, against those ordinary roles may open.
    connections_warn: float = 0.8
    connections_fail: float = 0.95


@dataclass(frozen=True)
class Report:
    findings: list[Finding]
    # Checks left out, and why (pgqueue's tables are missing: nothing to look at).
    not_run: list[str] = field(default_factory=list)

    @property
    def level(self) -> Level:
        return max((f.level for f in self.findings), key=lambda lv: lv.rank, default=Level.PASS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level.value,
            "findings": [{**asdict(f), "level": f.level.value} for f in self.findings],
            "not_run": list(self.not_run),
        }


def _worst(*levels: Level) -> Level:
    return max(levels, key=lambda lv: lv.rank, default=Level.PASS)


def duration(seconds: float | None) -> str:
    """12.3 -> '12 s', 723 -> '12 min 3 s', 7500 -> '2 h 5 min'."""
    if seconds is None:
        return "an unknown time"
    if seconds < 10:
        return f"{max(seconds, 0):.1f} s"
    total = int(seconds)
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60)):
        if total >= size:
            rest = (total % size) // sub_size
            return f"{total // size} {unit}" + (f" {rest} {sub}" if rest else "")
    minutes, secs = divmod(total, 60)
    if minutes:
        return f"{minutes} min" + (f" {secs} s" if secs else "")
    return f"{secs} s"


def _ago(then: datetime | None, now: datetime) -> str:
    return "never" if then is None else f"{duration((now - then).total_seconds())} ago"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


# -- the schema and the server ------------------------------------------------------------


def check_schema(conn: Conn) -> Finding:
    """pgqueue's schema revision against this pgqueue's head."""
    current = revisions.current_revision(conn)
    head = revisions.HEAD_REVISION
    data = {"revision": current, "head": head}
    if current is None:
        return Finding(
            Level.FAIL,
            "schema",
            "pgqueue's tables are not in this database",
            "Workers refuse to start and nothing can be enqueued. Run `pgqueue migrate` (or "
            "review `pgqueue migrate --sql` and apply it). The checks of pgqueue's own tables "
            "were not run.",
            data,
        )
    if current == head:
        return Finding(Level.PASS, "schema", f"at revision {head}, this pgqueue's latest", "", data)
    if current in revisions.REVISIONS:
        return Finding(
            Level.FAIL,
            "schema",
            f"at revision {current}; this pgqueue needs {head}",
            "Workers of this version refuse to start on an older schema. Run `pgqueue migrate` "
            "(it is safe while older workers run: migrate first, then roll the workers).",
            data,
        )
    return Finding(
        Level.WARN,
        "schema",
        f"at revision {current}, newer than this pgqueue knows (its latest is {head})",
        "A newer pgqueue migrated this database. That is the normal state during a rolling "
        "deploy, and older workers keep working; if it lasts, upgrade pgqueue where this "
        "doctor and the older workers run.",
        data,
    )


def check_server_version(conn: Conn) -> Finding:
    version = server.server_version(conn)
    data = {"version": version.text, "version_num": version.number}
    found = f"PostgreSQL {version.text}"
    if version.major < MINIMUM_SERVER_MAJOR:
        return Finding(
            Level.FAIL,
            "server version",
            found,
            f"pgqueue needs PostgreSQL {MINIMUM_SERVER_MAJOR} or newer (its migrations use "
            "settings older servers do not have). Upgrade the server.",
            data,
        )
    if version.major not in TESTED_SERVER_MAJORS and version.major < max(TESTED_SERVER_MAJORS):
        tested = " and ".join(str(v) for v in TESTED_SERVER_MAJORS)
        return Finding(
            Level.WARN,
            "server version",
            found,
            f"pgqueue runs on PostgreSQL {MINIMUM_SERVER_MAJOR} and newer but is tested on "
            f"{tested}. Plan an upgrade to a tested major version.",
            data,
        )
    return Finding(Level.PASS, "server version", found, "", data)


def check_pooling(connect: Callable[[], Conn]) -> Finding:
    """Whether a pooler in transaction mode sits between pgqueue and the server."""
    probe = server.probe_pooling(connect)
    data = {
        "per_transaction": probe.per_transaction,
        "first_connection_pids": list(probe.first_pids),
        "second_connection_pids": list(probe.second_pids),
    }
    if not probe.per_transaction:
        return Finding(
            Level.PASS,
            "connection pooling",
            "each connection keeps its own server process: no pooler in transaction mode "
            "between pgqueue and the server",
            "",
            data,
        )
    if probe.shared_pids:
        seen = (
            "two connections open at once were served by the same server process "
            f"(pid {', '.join(map(str, probe.shared_pids))})"
        )
    else:
        pids = sorted(set(probe.first_pids) | set(probe.second_pids))
        seen = (
            "one connection was served by several server processes in turn "
            f"(pids {', '.join(map(str, pids))})"
        )
    return Finding(
        Level.FAIL,
        "connection pooling",
        f"{seen}: a pooler in transaction (or statement) mode, such as PgBouncer with "
        "pool_mode = transaction, sits between pgqueue and the server",
        "A worker needs a session of its own: it LISTENs to be woken, holds a session "
        "advisory lock that tells the fleet it is alive, and sets per-session planner "
        "settings. Behind a transaction pooler its wake-ups go astray and the fleet can "
        "declare it lost while it runs jobs. Point pgqueue at PostgreSQL directly, or at a "
        "pooler in session mode (a separate PgBouncer database entry with pool_mode = "
        "session); or keep the DSN on the pooler with PGQUEUE_TRANSACTION_POOLING=1 and give "
        "the workers a direct or session-pooled PGQUEUE_LISTEN_DSN (pgqueue worker "
        "--listen-dsn): see docs/operations.md, PgBouncer.",
        data,
    )


def check_connections(conn: Conn, th: Thresholds) -> Finding:
    c = server.connections(conn)
    data = asdict(c) | {"available": c.available, "used_fraction": round(c.used_fraction, 4)}
    found = (
        f"{c.in_use} of {c.available} connections in use ({c.used_fraction:.0%}; "
        f"max_connections {c.max_connections}, {c.reserved} reserved); pgqueue's: {c.pgqueue} "
        f"({c.pgqueue_here} in this database)"
    )
    if c.used_fraction >= th.connections_fail:
        level = Level.FAIL
    elif c.used_fraction >= th.connections_warn:
        level = Level.WARN
    else:
        return Finding(Level.PASS, "connections", found, "", data)
    return Finding(
        level,
        "connections",
        found,
        "When none are left, PostgreSQL refuses new connections: workers that reconnect, "
        "processes that start and enqueue, this doctor. A worker holds about five of its own "
        "(claiming, completing, maintenance, LISTEN, scheduler) besides its tasks'. pgqueue's "
        "are those whose application_name is 'pgqueue' (unless the DSN names another). Close "
        "idle connections elsewhere, pool the application's connections, or raise "
        "max_connections (a server restart).",
        data,
    )


# -- the xmin horizon ---------------------------------------------------------------------


def _holder_level(h: server.XminHolder, th: Thresholds) -> Level:
    if h.xid_age >= th.xid_age_fail or (h.kind == "replication slot" and not h.slot_active):
        return Level.FAIL
    if h.age_seconds is not None and h.age_seconds >= th.xmin_fail:
        return Level.FAIL
    if h.xid_age >= th.xid_age_warn:
        return Level.WARN
    if h.age_seconds is not None and h.age_seconds >= th.xmin_warn:
        return Level.WARN
    return Level.PASS


def describe_holder(h: server.XminHolder) -> str:
    """One line naming a holder of the xmin horizon."""
    if h.kind == "prepared transaction":
        return (
            f"prepared transaction {h.gid!r} (owner {h.user_name}, database {h.database}), "
            f"prepared {duration(h.age_seconds)} ago"
        )
    if h.kind == "replication slot":
        state = "active, pid " + str(h.pid) if h.slot_active else "inactive"
        return (
            f"replication slot {h.slot_name!r} ({state}) keeps row versions "
            f"{h.xid_age:,} transactions old"
        )
    if h.backend_type is None and h.state is None:
        named = [
            f"application {h.application_name!r}" if h.application_name else None,
            f"user {h.user_name}" if h.user_name else None,
        ]
        who = ", ".join(
            [p for p in named if p]
            + ["its age and query hidden: grant pg_read_all_stats to the role doctor runs as"]
        )
    else:
        parts = [
            f"application {h.application_name!r}" if h.application_name else "no application_name",
            f"user {h.user_name}" if h.user_name else None,
            f"client {h.client}" if h.client else None,
            h.state,
            h.backend_type if h.backend_type not in (None, "client backend") else None,
        ]
        who = ", ".join(p for p in parts if p)
    text = f"pid {h.pid} ({who})"
    if h.xact_start is not None:
        text += (
            f" has held its transaction open for {duration(h.age_seconds)} "
            f"(since {h.xact_start:%Y-%m-%d %H:%M:%S%z})"
        )
    else:
        text += f" keeps row versions {h.xid_age:,} transactions old"
    if h.query_start is not None and h.query:
        query = " ".join(h.query.split())
        query = query if len(query) <= 120 else query[:117] + "..."
        text += f"; its last query began {h.query_start:%Y-%m-%d %H:%M:%S%z}: {query}"
    return text


def _holder_advice(h: server.XminHolder) -> str:
    if h.kind == "prepared transaction":
        return (
            f"End it with COMMIT PREPARED {h.gid!r} or ROLLBACK PREPARED {h.gid!r} (in database "
            f"{h.database}), once the transaction manager that prepared it has been asked why "
            "it did not."
        )
    if h.kind == "replication slot":
        return (
            "A slot keeps its xmin until its consumer (a standby with hot_standby_feedback) "
            "moves it on; an inactive slot keeps it forever. If nothing uses the slot any more, "
            f"SELECT pg_drop_replication_slot({h.slot_name!r}); else look at the standby's "
            "long queries."
        )
    return (
        "End that transaction: fix the application that leaves it open (commit or roll back "
        "sooner; idle_in_transaction_session_timeout ends forgotten ones), or end the session "
        f"with SELECT pg_terminate_backend({h.pid})."
    )


def check_xmin_horizon(conn: Conn, th: Thresholds) -> Finding:
    """The oldest transaction, prepared transaction or replication slot that keeps VACUUM
    from removing dead rows in this database."""
    holders = server.xmin_holders(conn, limit=5)
    data = {"holders": [asdict(h) for h in holders]}
    if not holders:
        return Finding(
            Level.PASS,
            "xmin horizon",
            "no other transaction, prepared transaction or replication slot holds it back",
            "",
            data,
        )
    levels = [_holder_level(h, th) for h in holders]
    level = _worst(*levels)
    # The one to act on: the worst, and among equals the oldest (the list is oldest first).
    culprit = holders[[lv.rank for lv in levels].index(level.rank)]
    found = "oldest holder: " + describe_holder(culprit)
    others = [
        h
        for h, lv in zip(holders, levels, strict=True)
        if h is not culprit and lv is not Level.PASS
    ]
    if others:
        found += f"; {len(others)} more past the thresholds: " + "; ".join(
            describe_holder(h) for h in others[:2]
        )
    if level is Level.PASS:
        return Finding(Level.PASS, "xmin horizon", found, "", data)
    return Finding(
        level,
        "xmin horizon",
        found,
        "While it holds the horizon, VACUUM removes no row version that died after it began, "
        "in pgqueue_jobs or any other table of the database: every job leaves dead rows "
        "behind, so the hot table and its indexes grow until it ends, and every read that "
        "scans them takes longer. " + _holder_advice(culprit),
        data,
    )


# -- the hot table ------------------------------------------------------------------------

_HOT = HOT_TABLE


def check_dead_tuples(table: server.HotTable, th: Thresholds) -> Finding:
    data = {"dead": table.dead, "live": table.live}
    found = f"{table.dead:,} dead and {table.live:,} live row versions in {_HOT} (estimates)"
    if table.dead >= th.dead_tuples_fail and table.dead > table.live:
        level = Level.FAIL
    elif table.dead >= th.dead_tuples_warn and table.dead > table.live:
        level = Level.WARN
    else:
        return Finding(Level.PASS, "dead rows", found, "", data)
    return Finding(
        level,
        "dead rows",
        found,
        "Every job leaves dead row versions in the hot table; until VACUUM removes them the "
        "table and its indexes grow, and the reads that scan a queue from its start step over "
        "them. If autovacuum runs (see the autovacuum check) "
        "and they stay, something holds the xmin horizon (see that check); "
        f"`VACUUM (VERBOSE) {_HOT}` reports how many it could not remove yet.",
        data,
    )


def check_hot_table_size(table: server.HotTable, th: Thresholds) -> Finding:
    per_row = table.total_bytes // max(table.live, 1)
    data = {
        "total_bytes": table.total_bytes,
        "table_bytes": table.table_bytes,
        "live": table.live,
        "bytes_per_live_row": per_row,
    }
    found = (
        f"{_HOT} takes {_size(table.total_bytes)} with its indexes (the table alone "
        f"{_size(table.table_bytes)}) for {table.live:,} live rows"
    )
    if table.total_bytes < th.hot_table_bytes_warn or per_row < th.bytes_per_row_warn:
        return Finding(Level.PASS, "hot table size", found, "", data)
    return Finding(
        Level.WARN,
        "hot table size",
        found,
        "The hot table holds only queued and running jobs, so this is mostly empty space: "
        "bloat left by a backlog or by dead rows that could not be vacuumed in time. VACUUM "
        "lets new jobs reuse it, but bloated indexes keep claims slower. Once the dead rows are "
        f"gone, `REINDEX TABLE CONCURRENTLY {_HOT}` shrinks the indexes without blocking "
        f"workers; `VACUUM FULL {_HOT}` gives the table's space back but locks it (stop the "
        "workers first).",
        data,
    )


def check_autovacuum(table: server.HotTable, th: Thresholds) -> Finding:
    last = table.last_vacuumed
    data = {
        "autovacuum_enabled": table.autovacuum_enabled,
        "autovacuum_on_server": table.autovacuum_on_server,
        "autovacuum_on_table": table.autovacuum_on_table,
        "last_vacuum": table.last_vacuum,
        "last_autovacuum": table.last_autovacuum,
        "last_autoanalyze": table.last_autoanalyze,
        "autovacuum_count": table.autovacuum_count,
        "track_counts": table.track_counts,
    }
    when = (
        f"last autovacuum {_ago(table.last_autovacuum, table.now)}, last vacuum by hand "
        f"{_ago(table.last_vacuum, table.now)}, last autoanalyze "
        f"{_ago(table.last_autoanalyze, table.now)}"
    )
    if not table.track_counts:
        return Finding(
            Level.WARN,
            "autovacuum",
            f"track_counts is off: {when}",
            "Without statistics autovacuum cannot tell that the hot table needs vacuuming, and "
            "doctor cannot count its dead rows. Set track_counts = on.",
            data,
        )
    many_dead = table.dead >= th.dead_tuples_warn
    if not table.autovacuum_enabled:
        where, undo = [], []
        if not table.autovacuum_on_server:
            where.append("for the whole server (autovacuum = off)")
            undo.append("autovacuum = on in the server's configuration, then a reload")
        if not table.autovacuum_on_table:
            where.append(f"for {_HOT} (its storage parameter autovacuum_enabled = false)")
            undo.append(f"ALTER TABLE {_HOT} RESET (autovacuum_enabled)")
        return Finding(
            Level.FAIL if many_dead else Level.WARN,
            "autovacuum",
            f"autovacuum is off {' and '.join(where)}; {when}; {table.dead:,} dead rows",
            "Each job leaves dead row versions in the hot table, and nothing removes them "
            "unless someone runs VACUUM: the table and its indexes grow without end. Turn it on "
            f"({'; '.join(undo)}), or run `VACUUM {_HOT}` yourself every minute or so "
            "while jobs flow.",
            data,
        )
    stale = last is None or (table.now - last).total_seconds() >= th.vacuum_stale
    if stale and many_dead:
        return Finding(
            Level.WARN,
            "autovacuum",
            f"{_HOT} has {table.dead:,} dead rows and was not vacuumed for "
            f"{duration(th.vacuum_stale)} or more: {when}",
            "Autovacuum may be busy with large tables (autovacuum_max_workers), or its runs on "
            "this table may be cancelled by conflicting locks (the server log says 'canceling "
            f"autovacuum task'). Run `VACUUM (VERBOSE) {_HOT}` and read what it reports.",
            data,
        )
    return Finding(Level.PASS, "autovacuum", when, "", data)


# -- pgqueue's own rows -------------------------------------------------------------------


def check_long_running_jobs(
    conn: Conn, time_limits: Mapping[str, float] | None, th: Thresholds
) -> Finding:
    """Running jobs past their task's timeout (known from the app's tasks), or for hours."""
    jobs = stuck.long_running_jobs(
        conn, time_limits or {}, grace=th.overrun_grace, running_for=th.running_warn
    )
    data = {"jobs": [asdict(j) for j in jobs], "time_limits_known": time_limits is not None}
    unknown = (
        ""
        if time_limits is not None
        else " (time limits not checked: pass --app to compare jobs with their tasks' timeouts)"
    )
    if not jobs:
        return Finding(
            Level.PASS,
            "long-running jobs",
            f"no job has run for {duration(th.running_warn)} or more{unknown}",
            "",
            data,
        )
    over = [j for j in jobs if j.time_limit is not None and j.running_seconds > j.time_limit]

    def line(j: stuck.LongRunningJob) -> str:
        where = f"worker {j.worker_name}" if j.worker_name else f"worker id {j.worker_id} (gone)"
        limit = f", past its {duration(j.time_limit)} timeout" if j.time_limit is not None else ""
        return (
            f"job {j.id} ({j.task_name}, queue {j.queue}, attempt {j.attempts}) has run for "
            f"{duration(j.running_seconds)} on {where}{limit}"
        )

    listed = (over or jobs)[:3]
    found = "; ".join(line(j) for j in listed)
    if len(jobs) > len(listed):
        found += f"; {len(jobs) - len(listed)} more"
    found += unknown
    if over:
        return Finding(
            Level.FAIL,
            "long-running jobs",
            found,
            "A worker ends an attempt at its task's timeout and records a TimeoutError, so a job "
            "still running well past it means its worker cannot act: frozen (stopped, swapping, "
            "stuck in code that holds the GIL) or cut off from the database. See the silent "
            "workers check; a worker that is gone is declared lost by the others and its jobs "
            "run again. `pgqueue jobs cancel ID` ends a job.",
            data,
        )
    return Finding(
        Level.WARN,
        "long-running jobs",
        found,
        "Nothing limits these jobs' time (their tasks have no timeout, or their app was not "
        "given). If they should not take this long, see what their worker is doing, and give "
        "the task a timeout= so that an attempt cannot run forever.",
        data,
    )


def check_silent_workers(conn: Conn, th: Thresholds) -> Finding:
    silent = stuck.silent_workers(conn, older_than=th.heartbeat_timeout)
    heard = stuck.workers_heard_from(conn, within=th.heartbeat_timeout)
    data = {"silent": [asdict(w) for w in silent], "workers_heard_from": heard}
    if not silent:
        return Finding(
            Level.PASS,
            "silent workers",
            f"every registered worker ({heard}) sent a heartbeat in the last "
            f"{duration(th.heartbeat_timeout)}",
            "",
            data,
        )
    found = "; ".join(
        f"worker {w.name} (host {w.hostname}, pid {w.pid}) last sent a heartbeat "
        f"{duration(w.silent_seconds)} ago and has {w.running_jobs} running job(s)"
        for w in silent[:3]
    )
    if len(silent) > 3:
        found += f"; {len(silent) - 3} more"
    found += f"; {heard} worker(s) heard from in the last {duration(th.heartbeat_timeout)}"
    rescue = (
        "No live worker is left to do it: start one."
        if heard == 0
        else "Live workers rescue a worker once its heartbeat is as old as their own "
        "--heartbeat-timeout; if this one stays, look at theirs."
    )
    return Finding(
        Level.FAIL if any(w.running_jobs for w in silent) else Level.WARN,
        "silent workers",
        found,
        "A worker sends a heartbeat every second. One that stopped was killed without cleaning "
        "up, is frozen, or lost its connection. Any live worker's maintenance declares it "
        "lost and puts its running jobs back in the queue. " + rescue + " If the process "
        "still exists on its host, find out why it froze.",
        data,
    )


def check_overdue_schedules(conn: Conn, th: Thresholds) -> Finding:
    overdue = stuck.overdue_schedules(conn, grace=th.schedule_warn)
    data = {"overdue": [asdict(s) for s in overdue]}
    if not overdue:
        return Finding(
            Level.PASS,
            "overdue schedules",
            f"no enabled periodic schedule is more than {duration(th.schedule_warn)} late",
            "",
            data,
        )
    found = "; ".join(
        f"{s.name} (task {s.task_name}) was due {duration(s.overdue_seconds)} ago"
        for s in overdue[:3]
    )
    if len(overdue) > 3:
        found += f"; {len(overdue) - 3} more"
    worst = max(s.overdue_seconds for s in overdue)
    return Finding(
        Level.FAIL if worst >= th.schedule_fail else Level.WARN,
        "overdue schedules",
        found,
        "A schedule fires only while a scheduler runs whose app registers its task: every "
        "worker runs one unless started with --no-scheduler, or run `pgqueue scheduler`. "
        "Start one with the app that defines the task, or `pgqueue periodic disable NAME` a "
        "schedule that should not fire.",
        data,
    )


def check_notification_queue(conn: Conn, th: Thresholds) -> Finding:
    usage = server.notification_queue_usage(conn)
    data = {"usage": usage}
    shown = "under 0.01%" if 0 < usage < 0.0001 else f"{usage:.2%}"
    found = f"the NOTIFY queue is {shown} full"
    if usage > 0 and usage >= th.notify_fail:
        level = Level.FAIL
    elif usage > 0 and usage >= th.notify_warn:
        level = Level.WARN
    else:
        return Finding(Level.PASS, "notification queue", found, "", data)
    return Finding(
        level,
        "notification queue",
        found,
        "The queue keeps each notification until every session that LISTENs has read it, and "
        "a session reads only between transactions: one that LISTENs and stays in a "
        "transaction fills it (the xmin horizon check names the oldest transaction). Once it "
        "is full every NOTIFY fails, and so does every enqueue, which notifies in its own "
        "transaction. End that transaction.",
        data,
    )


# -- all of them --------------------------------------------------------------------------


def _could_not_check(check: str, exc: Exception) -> Finding:
    found = "could not check: " + " ".join(str(exc).split())
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError, PgQueueError)):
        return Finding(
            Level.FAIL,
            check,
            found,
            "The connection to the database failed during the check. Run doctor again once "
            "the database answers.",
        )
    return Finding(
        Level.WARN,
        check,
        found,
        "The database refused this check's query: a schema not at head (see the schema "
        "check), or a role without the rights to read the statistics views.",
    )


def _guarded(check: str, run: Callable[[], Finding]) -> Finding:
    """`run()`, or a finding saying why the check could not run."""
    try:
        return run()
    except (psycopg.Error, PgQueueError) as exc:
        return _could_not_check(check, exc)


def run_checks(
    conn: Conn,
    connect: Callable[[], Conn],
    *,
    time_limits: Mapping[str, float] | None = None,
    thresholds: Thresholds | None = None,
) -> Report:
    """Every check, on `conn` (autocommit); `connect` opens the two extra connections the
    pooling check compares (to where the workers' session-bound connection goes: the app's
    listen DSN). `time_limits` (task name -> seconds, from the app's tasks) lets
    the long-running check compare jobs with their tasks' timeouts."""
    th = thresholds or Thresholds()
    findings = [
        _guarded("schema", lambda: check_schema(conn)),
        _guarded("server version", lambda: check_server_version(conn)),
        _guarded("connection pooling", lambda: check_pooling(connect)),
        _guarded("connections", lambda: check_connections(conn, th)),
        _guarded("xmin horizon", lambda: check_xmin_horizon(conn, th)),
    ]
    not_run: list[str] = []
    table: server.HotTable | None = None
    try:
        table = server.hot_table(conn)
    except psycopg.Error as exc:
        findings.append(_could_not_check("hot table", exc))
    if table is not None:
        findings += [
            check_dead_tuples(table, th),
            check_hot_table_size(table, th),
            check_autovacuum(table, th),
        ]
        findings += [
            _guarded("long-running jobs", lambda: check_long_running_jobs(conn, time_limits, th)),
            _guarded("silent workers", lambda: check_silent_workers(conn, th)),
            _guarded("overdue schedules", lambda: check_overdue_schedules(conn, th)),
        ]
    else:
        not_run += [
            "dead rows",
            "hot table size",
            "autovacuum",
            "long-running jobs",
            "silent workers",
            "overdue schedules",
        ]
    findings.append(_guarded("notification queue", lambda: check_notification_queue(conn, th)))
    return Report(findings, not_run)


def time_limits_of(tasks: Mapping[str, Any]) -> dict[str, float]:
    """Task name -> timeout in seconds, for the app's tasks that have one."""
    return {name: task.timeout for name, task in tasks.items() if task.timeout is not None}
