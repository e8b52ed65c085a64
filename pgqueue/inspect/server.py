"""The health of the database under the queue: what holds back the xmin horizon, the hot table's
dead rows, size and vacuuming, the NOTIFY queue, connections, the server's version, and whether
a transaction-pooling proxy sits between pgqueue and the server.

Every read here looks at PostgreSQL's in-memory views (pg_stat_activity, pg_prepared_xacts,
pg_replication_slots) or at one table's statistics, never at pgqueue's rows, so its cost does
not grow with the queue. `horizon_age_seconds` and `hot_table_tuples` are what the exporter
reads at each scrape; `pgqueue doctor` reads the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row

from pgqueue._names import HOT_TABLE
from pgqueue._pooling import PoolingProbe as PoolingProbe  # re-exported, see the end
from pgqueue._pooling import probe_pooling as probe_pooling

Conn = psycopg.Connection[Any]

# What pgqueue's own connections call themselves in pg_stat_activity (App sets it unless the
# DSN names another); "pgqueue <something>" counts too, for names that say which process.
APPLICATION_NAME = "pgqueue"
_PGQUEUE_CONNECTION = "(application_name = 'pgqueue' OR application_name LIKE 'pgqueue %')"


@dataclass(frozen=True)
class ServerVersion:
    number: int  # server_version_num: 160002 for 16.2
    text: str  # server_version: "16.2", "15.20 (Debian 15.20-0+deb12u1)"

    @property
    def major(self) -> int:
        return self.number // 10000


def server_version(conn: Conn) -> ServerVersion:
    row = conn.execute(
        "SELECT current_setting('server_version_num')::int, current_setting('server_version')"
    ).fetchone()
    assert row is not None
    return ServerVersion(int(row[0]), str(row[1]))


# -- the xmin horizon ---------------------------------------------------------------------


@dataclass(frozen=True)
class XminHolder:
    """Something that keeps VACUUM from removing the dead rows of this database's tables.

    `kind` is "transaction" (a session: its open transaction or running query, or a standby's
    feedback through a walsender), "prepared transaction" (`gid`, since `xact_start`) or
    "replication slot" (`slot_name`, `slot_active`). `xid_age` is how many transactions old
    the oldest row version it keeps is; `age_seconds` how long it has held it, where that is
    known (not for slots).
    """

    kind: str
    xid_age: int
    age_seconds: float | None
    pid: int | None
    database: str | None
    user_name: str | None
    application_name: str | None
    client: str | None
    state: str | None
    backend_type: str | None
    xact_start: datetime | None
    query_start: datetime | None
    query: str | None
    gid: str | None
    slot_name: str | None
    slot_active: bool | None


# Sessions, prepared transactions and slots that hold a transaction id or snapshot, oldest
# first. A session counts if it is in this database or in none (a walsender carrying a
# standby's feedback): for an ordinary table VACUUM ignores the sessions of other databases.
# Replication slots count wherever they are, prepared transactions where they were made.
# Autovacuum workers are left out (VACUUM ignores their snapshots), and so is this session.
_HOLDERS = """
WITH holders AS (
    SELECT 'transaction' AS kind,
           GREATEST(age(a.backend_xid), age(a.backend_xmin)) AS xid_age,
           extract(epoch FROM now() - a.xact_start)::float8 AS age_seconds,
           a.pid, a.datname::text AS database, a.usename::text AS user_name,
           a.application_name,
           CASE WHEN a.client_addr IS NOT NULL THEN host(a.client_addr)
                WHEN a.client_port = -1 THEN 'local socket' END AS client,
           a.state, a.backend_type, a.xact_start, a.query_start,
           left(a.query, 300) AS query,
           NULL::text AS gid, NULL::text AS slot_name, NULL::boolean AS slot_active
    FROM pg_stat_activity a
    WHERE (a.backend_xid IS NOT NULL OR a.backend_xmin IS NOT NULL)
      AND a.pid <> pg_backend_pid()
      AND (a.datname = current_database() OR a.datid IS NULL)
      AND a.backend_type IS DISTINCT FROM 'autovacuum worker'
    UNION ALL
    SELECT 'prepared transaction', age(p.transaction),
           extract(epoch FROM now() - p.prepared)::float8,
           NULL, p.database::text, p.owner::text, NULL, NULL, NULL, NULL, p.prepared, NULL,
           NULL, p.gid, NULL, NULL
    FROM pg_prepared_xacts p
    WHERE p.database = current_database()
    UNION ALL
    SELECT 'replication slot', age(s.xmin), NULL,
           s.active_pid, s.database::text, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, s.slot_name::text, s.active
    FROM pg_replication_slots s
    WHERE s.xmin IS NOT NULL
)
"""

XMIN_HOLDERS = _HOLDERS + "SELECT * FROM holders ORDER BY xid_age DESC, age_seconds DESC LIMIT %s"

HORIZON_AGE = _HOLDERS + "SELECT COALESCE(max(age_seconds), 0) FROM holders"


def xmin_holders(conn: Conn, limit: int = 5) -> list[XminHolder]:
    """The `limit` oldest holders of this database's xmin horizon, oldest first.

    The first one is what VACUUM waits for: no row version it can still see, in any table,
    can be removed until it ends. A role without `pg_read_all_stats` sees other roles'
    sessions without their application, client, state or query (None here).
    """
    with conn.cursor(row_factory=class_row(XminHolder)) as cur:
        return cur.execute(XMIN_HOLDERS, (limit,)).fetchall()


def horizon_age_seconds(conn: Conn) -> float:
    """How long the oldest transaction or prepared transaction holding back this database's
    xmin horizon has been open, in seconds (0 if none); what the exporter reports.

    Replication slots do not say since when they hold theirs: see `xmin_holders`.
    """
    row = conn.execute(HORIZON_AGE).fetchone()
    return float(row[0]) if row is not None and row[0] is not None else 0.0


# -- the hot table ------------------------------------------------------------------------


@dataclass(frozen=True)
class TupleCounts:
    live: int
    dead: int


@dataclass(frozen=True)
class HotTable:
    """pgqueue_jobs as the statistics see it. Counts are estimates that the server updates
    within about a second of each change. Autovacuum runs on the table only if it is on both
    for the whole server and for the table (its storage parameter autovacuum_enabled)."""

    live: int
    dead: int
    table_bytes: int  # the heap alone
    total_bytes: int  # with its indexes and TOAST
    last_vacuum: datetime | None
    last_autovacuum: datetime | None
    last_analyze: datetime | None
    last_autoanalyze: datetime | None
    vacuum_count: int
    autovacuum_count: int
    autovacuum_on_server: bool
    autovacuum_on_table: bool
    track_counts: bool
    now: datetime

    @property
    def autovacuum_enabled(self) -> bool:
        return self.autovacuum_on_server and self.autovacuum_on_table

    @property
    def last_vacuumed(self) -> datetime | None:
        """The latest vacuum of the table, by autovacuum or by hand."""
        times = [t for t in (self.last_vacuum, self.last_autovacuum) if t is not None]
        return max(times) if times else None


_TABLE_STATS = f"""
SELECT pg_stat_get_live_tuples(c.oid), pg_stat_get_dead_tuples(c.oid),
       pg_relation_size(c.oid), pg_total_relation_size(c.oid),
       pg_stat_get_last_vacuum_time(c.oid), pg_stat_get_last_autovacuum_time(c.oid),
       pg_stat_get_last_analyze_time(c.oid), pg_stat_get_last_autoanalyze_time(c.oid),
       pg_stat_get_vacuum_count(c.oid), pg_stat_get_autovacuum_count(c.oid),
       current_setting('autovacuum')::bool, c.reloptions,
       current_setting('track_counts')::bool, now()
FROM pg_class c
WHERE c.oid = to_regclass('{HOT_TABLE}')
"""

_TUPLES = f"""
SELECT pg_stat_get_live_tuples(c.oid), pg_stat_get_dead_tuples(c.oid)
FROM pg_class c WHERE c.oid = to_regclass('{HOT_TABLE}')
"""

_FALSE = ("false", "off", "no", "0", "f", "n", "of")


def _table_autovacuum(reloptions: list[str] | None) -> bool:
    for option in reloptions or ():
        name, _, value = option.partition("=")
        if name.strip().lower() == "autovacuum_enabled":
            return value.strip().lower() not in _FALSE
    return True


def hot_table(conn: Conn) -> HotTable | None:
    """pgqueue_jobs's statistics, size and vacuuming; None if the table does not exist."""
    row = conn.execute(_TABLE_STATS).fetchone()
    if row is None:
        return None
    return HotTable(
        live=int(row[0]),
        dead=int(row[1]),
        table_bytes=int(row[2]),
        total_bytes=int(row[3]),
        last_vacuum=row[4],
        last_autovacuum=row[5],
        last_analyze=row[6],
        last_autoanalyze=row[7],
        vacuum_count=int(row[8]),
        autovacuum_count=int(row[9]),
        autovacuum_on_server=bool(row[10]),
        autovacuum_on_table=_table_autovacuum(row[11]),
        track_counts=bool(row[12]),
        now=row[13],
    )


def hot_table_tuples(conn: Conn) -> TupleCounts | None:
    """pgqueue_jobs's live and dead row estimates (one look at its statistics: cheap enough
    for every scrape); None if the table does not exist."""
    row = conn.execute(_TUPLES).fetchone()
    return None if row is None else TupleCounts(int(row[0]), int(row[1]))


# -- NOTIFY and connections ---------------------------------------------------------------


def notification_queue_usage(conn: Conn) -> float:
    """The fraction (0-1) of the server's NOTIFY queue in use. It fills when a session that
    LISTENs stays inside one transaction; once full, every NOTIFY fails, and with it every
    enqueue (pgqueue's INSERT notifies in the same transaction)."""
    row = conn.execute("SELECT pg_notification_queue_usage()").fetchone()
    assert row is not None
    return float(row[0])


@dataclass(frozen=True)
class Connections:
    """Client connections across the whole server against what it allows.

    `available` is what ordinary roles may use: max_connections less the slots reserved for
    superusers (and, from PostgreSQL 16, for pg_use_reserved_connections). `pgqueue` counts
    the connections whose application_name says pgqueue; `pgqueue_here` those of them in this
    database.
    """

    in_use: int
    max_connections: int
    reserved: int
    pgqueue: int
    pgqueue_here: int
    this_database: int

    @property
    def available(self) -> int:
        return max(self.max_connections - self.reserved, 1)

    @property
    def used_fraction(self) -> float:
        return self.in_use / self.available


_CONNECTIONS = f"""
SELECT count(*) FILTER (WHERE client),
       current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int
         + COALESCE(current_setting('reserved_connections', true), '0')::int,
       count(*) FILTER (WHERE client AND {_PGQUEUE_CONNECTION}),
       count(*) FILTER (WHERE client AND {_PGQUEUE_CONNECTION} AND datname = current_database()),
       count(*) FILTER (WHERE client AND datname = current_database())
FROM (
    -- A role without pg_read_all_stats sees no backend_type in other roles' rows: the
    -- server's own processes are then those with no database or no user.
    SELECT a.*,
           COALESCE(a.backend_type = 'client backend',
                    a.datid IS NOT NULL AND a.usesysid IS NOT NULL) AS client
    FROM pg_stat_activity a
) a
"""


def connections(conn: Conn) -> Connections:
    row = conn.execute(_CONNECTIONS).fetchone()
    assert row is not None
    return Connections(*(int(v) for v in row))


# -- what sits between pgqueue and the server ---------------------------------------------
#
# In pgqueue._pooling, which a worker imports at every start without the rest of this module.
