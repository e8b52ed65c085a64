"""Schema management: run pgqueue's alembic migrations, print their SQL, check the version.

The migrations ship inside the wheel as `pgqueue/migrations` (from the repository's top-level
`migrations/`). They keep their history in `pgqueue_alembic_version`, so an application's own
alembic history is untouched. From an application's alembic migration, call
`upgrade(op.get_bind())`.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import psycopg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from pgqueue import queries
from pgqueue._names import VERSION_TABLE
from pgqueue.revisions import check_schema, current_revision

logger = logging.getLogger("pgqueue")

# Checked without alembic, in pgqueue.revisions; kept here too, where migrations are run.
__all__ = ["check_schema", "current_revision", "downgrade", "head_revision", "upgrade"]


@cache
def migrations_path() -> Path:
    """Where the migrations are: inside the installed package, or at the source tree's top."""
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / "migrations", package_dir.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise RuntimeError(f"pgqueue's migrations are missing (looked beside {package_dir})")


def alembic_config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_path()))
    config.set_main_option("sqlalchemy.url", "postgresql+psycopg://")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def engine_for(dsn: str) -> sa.Engine:
    """A SQLAlchemy engine over psycopg 3 for any libpq DSN (URL or key=value form)."""
    return sa.create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), poolclass=sa.NullPool
    )


@contextlib.contextmanager
def _restoring_alembic_proxies() -> Iterator[None]:
    """Run alembic inside an application's own alembic migration.

    alembic keeps the running migration's `op` and `context` in module-level proxies and
    clears them when a run ends; a nested run would leave the application's migration with
    neither. Reinstall the outer ones afterwards.
    """
    import alembic.context
    import alembic.op

    outer = [getattr(module, "_proxy", None) for module in (alembic.context, alembic.op)]
    try:
        yield
    finally:
        for proxy in outer:
            if proxy is not None:
                proxy._install_proxy()


@contextlib.contextmanager
def _connection(target: str | sa.Connection) -> Iterator[sa.Connection]:
    """A connection in a transaction that holds the migration lock until it ends.

    The lock is taken before alembic reads the current revision: runs started at once (every
    container of a scaled service) then go one after the other, and each later one finds the
    schema at head and does nothing.
    """
    if isinstance(target, sa.Connection):
        with _restoring_alembic_proxies():
            target.execute(sa.text(queries.LOCK_MIGRATIONS))
            yield target
        return
    engine = engine_for(target)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(queries.LOCK_MIGRATIONS))
            yield connection
    finally:
        engine.dispose()


def upgrade(target: str | sa.Connection, revision: str = "head") -> None:
    """Upgrade pgqueue's schema to `revision` on a DSN or an open SQLAlchemy connection."""
    with _connection(target) as connection:
        command.upgrade(alembic_config(connection), revision)


def downgrade(target: str | sa.Connection, revision: str) -> None:
    """Downgrade pgqueue's schema to `revision` ("base" removes every pgqueue table)."""
    with _connection(target) as connection:
        command.downgrade(alembic_config(connection), revision)
        if revision == "base":
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {VERSION_TABLE}"))


def upgrade_sql(revision: str = "head", from_revision: str | None = None) -> str:
    """The SQL that `upgrade` would run, for a DBA to review and apply."""
    buffer = io.StringIO()
    config = alembic_config()
    config.output_buffer = buffer
    span = f"{from_revision}:{revision}" if from_revision else revision
    command.upgrade(config, span, sql=True)
    return buffer.getvalue()


def downgrade_sql(from_revision: str, revision: str) -> str:
    """The SQL that `downgrade` from `from_revision` to `revision` would run."""
    buffer = io.StringIO()
    config = alembic_config()
    config.output_buffer = buffer
    command.downgrade(config, f"{from_revision}:{revision}", sql=True)
    return buffer.getvalue()


@cache
def known_revisions() -> frozenset[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return frozenset(rev.revision for rev in script.walk_revisions())
