"""The migrated schema is exactly the package's SQLAlchemy metadata, and migrations go both ways."""

from __future__ import annotations

import psycopg
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from pgqueue import migrate
from pgqueue.schema import VERSION_TABLE, metadata


def schema_diff(dsn: str) -> list[object]:
    """How the schema of the database at `dsn` differs from the package's metadata."""
    engine = migrate.engine_for(dsn)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True}
            )
            return [
                d
                for d in compare_metadata(context, metadata)
                if not (d[0] == "remove_table" and d[1].name == VERSION_TABLE)
            ]
    finally:
        engine.dispose()


def test_migrated_schema_equals_metadata(dsn: str) -> None:
    assert schema_diff(dsn) == []


def test_downgrade_to_base_removes_everything_and_upgrade_restores_it(dsn: str) -> None:
    migrate.downgrade(dsn, "base")
    with psycopg.connect(dsn) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE 'pgqueue%%' AND tablename <> %s",
            (VERSION_TABLE,),
        ).fetchall()
        types = conn.execute(
            "SELECT typname FROM pg_type WHERE typname = 'pgqueue_job_status'"
        ).fetchall()
        assert migrate.current_revision(conn) is None
    assert tables == [] and types == []
    migrate.upgrade(dsn)
    assert schema_diff(dsn) == []


def test_version_table_is_pgqueues_own(empty_dsn: str) -> None:
    migrate.upgrade(empty_dsn)
    engine = migrate.engine_for(empty_dsn)
    try:
        names = sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
    assert VERSION_TABLE in names
    assert "alembic_version" not in names


def test_a_newer_schema_is_accepted_and_an_older_one_refused(dsn: str) -> None:
    import pytest

    from pgqueue.errors import SchemaNotMigrated

    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate.check_schema(conn)
        conn.execute(f"UPDATE {VERSION_TABLE} SET version_num = 'f00dfeedbeef'")
        migrate.check_schema(conn)  # written by a newer pgqueue: a rolling deploy
        conn.execute(f"UPDATE {VERSION_TABLE} SET version_num = '0001'")
        with pytest.raises(SchemaNotMigrated, match="run `pgqueue migrate`"):
            migrate.check_schema(conn)


def test_downgrade_to_base_leaves_no_pgqueue_table_at_all(dsn: str) -> None:
    migrate.downgrade(dsn, "base")
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'pgqueue%'")
        assert rows.fetchall() == []


def test_upgrade_to_0004_moves_finished_jobs_out_of_the_hot_table_and_back(dsn: str) -> None:
    migrate.downgrade(dsn, "0003")
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO pgqueue_jobs (task_name, status, finished_at, result, periodic_name,"
            " periodic_fire_at) VALUES"
            " ('t.done', 'succeeded', now(), '7', 'nightly', '2026-01-01T00:00:00Z'),"
            " ('t.waiting', 'queued', NULL, NULL, NULL, NULL)"
        )
    migrate.upgrade(dsn)
    with psycopg.connect(dsn) as conn:
        hot = conn.execute("SELECT task_name FROM pgqueue_jobs").fetchall()
        finished = conn.execute(
            "SELECT task_name, status::text, result FROM pgqueue_finished_jobs"
        ).fetchall()
        ticks = conn.execute("SELECT periodic_name FROM pgqueue_periodic_ticks").fetchall()
        everything = conn.execute("SELECT count(*) FROM pgqueue_all_jobs").fetchone()
    assert hot == [("t.waiting",)]
    assert finished == [("t.done", "succeeded", 7)]
    assert ticks == [("nightly",)]
    assert everything == (2,)
    migrate.downgrade(dsn, "0003")
    with psycopg.connect(dsn) as conn:
        back = conn.execute("SELECT task_name FROM pgqueue_jobs ORDER BY id").fetchall()
    assert back == [("t.done",), ("t.waiting",)]
    migrate.upgrade(dsn)
    assert schema_diff(dsn) == []


def test_the_revisions_checked_without_alembic_are_the_migrations_alembic_runs() -> None:
    from alembic.script import ScriptDirectory

    from pgqueue import revisions

    script = ScriptDirectory.from_config(migrate.alembic_config())
    oldest_first = [rev.revision for rev in script.walk_revisions()][::-1]
    assert list(revisions.REVISIONS) == oldest_first
    assert migrate.head_revision() == revisions.HEAD_REVISION


def test_a_command_checks_the_schema_without_importing_sqlalchemy_or_alembic() -> None:
    import subprocess
    import sys

    code = (
        "import sys, pgqueue.cli, pgqueue.worker, pgqueue.revisions;"
        "print(sorted(m for m in ('sqlalchemy', 'alembic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr
