"""An application that already uses alembic installs pgqueue from one of its own migrations."""

from __future__ import annotations

from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config

from pgqueue import migrate
from pgqueue.schema import VERSION_TABLE

HERE = Path(__file__).parent / "alembic_app"


def _tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row[0] for row in rows}


def test_application_migration_installs_and_removes_pgqueue(empty_dsn: str) -> None:
    engine = migrate.engine_for(empty_dsn)
    config = Config()
    config.set_main_option("script_location", str(HERE))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        tables = _tables(empty_dsn)
        assert {"orders", "pgqueue_jobs", "alembic_version", VERSION_TABLE} <= tables
        with psycopg.connect(empty_dsn) as conn:
            assert migrate.current_revision(conn) == migrate.head_revision()

        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
        assert not {t for t in _tables(empty_dsn) if t.startswith("pgqueue") or t == "orders"}
    finally:
        engine.dispose()
