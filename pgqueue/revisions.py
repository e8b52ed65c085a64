"""Which schema revision a database is at, and whether this pgqueue can run on it.

Workers and every command check the schema before they start; this module answers without
alembic or SQLAlchemy (which only `pgqueue migrate` needs), so that a command starts fast.
`tests/integration/test_schema.py` checks that these names match the migrations alembic reads.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from pgqueue._names import VERSION_TABLE
from pgqueue.errors import SchemaNotMigrated

logger = logging.getLogger("pgqueue")

# Every revision in migrations/versions, oldest first; the last is the head. A new migration
# adds its revision here.
REVISIONS = (
    "0001",
    "0002",
    "0003",
    "0004",
    "0005",
    "0006",
    "0007",
    "0008",
    "0009",
    "0010",
    "0011",
    "0012",
    "0013",
)
HEAD_REVISION = REVISIONS[-1]


def current_revision(conn: psycopg.Connection[Any]) -> str | None:
    """The schema revision of the database behind `conn`, or None if pgqueue is not installed."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)).fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()
    return None if row is None else str(row[0])


def check_schema(conn: psycopg.Connection[Any]) -> None:
    """Raise SchemaNotMigrated unless the database is at this pgqueue's head or newer.

    A revision this pgqueue does not know was written by a newer pgqueue: that is the normal
    state during a rolling deploy (migrate first, then roll the workers), and pgqueue's
    migrations keep older workers working, so it is logged and allowed.
    """
    current = current_revision(conn)
    if current is None:
        raise SchemaNotMigrated(
            "pgqueue's tables are not in this database: run `pgqueue migrate` first"
        )
    if current == HEAD_REVISION:
        return
    if current in REVISIONS:
        raise SchemaNotMigrated(
            f"pgqueue's schema is at revision {current}, this pgqueue needs {HEAD_REVISION}: "
            "run `pgqueue migrate`"
        )
    logger.warning(
        "pgqueue's schema is at revision %s, newer than this pgqueue knows (%s); continuing",
        current,
        HEAD_REVISION,
    )
