"""pgqueue's Django settings, its migrations (pgqueue's own alembic revisions run by
`manage.py migrate`), and `pgqueue worker` loading a Django project without manage.py."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import transaction
from django.test import override_settings
from orders.tasks import ship_order
from psycopg.conninfo import conninfo_to_dict
from shop_testing import PROJECT, Worker, wait_until

from pgqueue.contrib.django import app, dsn_for
from pgqueue.contrib.django.apps import check_database
from pgqueue.revisions import HEAD_REVISION

pytestmark = pytest.mark.django_db(transaction=True)


def count_jobs(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM pgqueue_jobs").fetchone()
        assert row is not None
        return int(row[0])


def tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE 'pgqueue%'"
        ).fetchall()
    return {name for (name,) in rows}


def test_the_last_migration_is_alembics_head() -> None:
    package = "pgqueue.contrib.django.migrations"
    folder = Path(importlib.import_module(package).__file__).parent  # type: ignore[arg-type]
    names = sorted(p.stem for p in folder.glob("[0-9]*.py"))
    last = importlib.import_module(f"{package}.{names[-1]}").Migration
    assert [op.revision for op in last.operations] == [HEAD_REVISION]


def test_migrate_zero_removes_the_schema_and_migrate_puts_it_back(test_dsn: str) -> None:
    assert "pgqueue_jobs" in tables(test_dsn)
    call_command("migrate", "pgqueue", "zero", verbosity=0)
    assert tables(test_dsn) == set()
    call_command("migrate", "pgqueue", verbosity=0)
    assert {"pgqueue_jobs", "pgqueue_finished_jobs", "pgqueue_workers"} <= tables(test_dsn)
    with psycopg.connect(test_dsn) as conn:
        row = conn.execute("SELECT version_num FROM pgqueue_alembic_version").fetchone()
    assert row == (HEAD_REVISION,)


def test_a_schema_already_migrated_by_pgqueue_is_left_alone(test_dsn: str) -> None:
    call_command("migrate", "pgqueue", "zero", verbosity=0)
    from pgqueue import migrate

    migrate.upgrade(test_dsn)  # `pgqueue migrate` first, as a team may have done
    ship_order.delay(1)
    call_command("migrate", "pgqueue", verbosity=0)
    assert count_jobs(test_dsn) == 1


def test_with_a_dsn_of_its_own_pgqueue_commits_at_once_even_in_atomic(test_dsn: str) -> None:
    with override_settings(PGQUEUE={"DSN": test_dsn}):
        app.close()
        with transaction.atomic():
            ship_order.delay(1)
            assert count_jobs(test_dsn) == 1  # not in Django's transaction: committed already
    app.close()


def test_unknown_settings_are_refused_with_the_keys_that_exist() -> None:
    with (
        override_settings(PGQUEUE={"DNS": "postgresql://x"}),
        pytest.raises(ImproperlyConfigured, match=r"unknown key.*'DNS'.*DSN"),
    ):
        ship_order.delay(1)
    with (
        override_settings(PGQUEUE={"DATABASE": "nope"}),
        pytest.raises(
            ImproperlyConfigured, match=r"'nope', which settings\.DATABASES does not define"
        ),
    ):
        ship_order.delay(1)


def test_a_database_that_is_not_postgresql_is_named_in_the_error() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"pgqueue needs PostgreSQL.*sqlite3"):
        dsn_for({"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"})
    assert check_database() == []  # this project's database is PostgreSQL


def test_the_dsn_comes_from_databases_with_its_libpq_options() -> None:
    dsn = dsn_for(
        {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "shop",
            "USER": "web",
            "PASSWORD": "s3cret",
            "HOST": "db.internal",
            "PORT": "6432",
            "OPTIONS": {"sslmode": "require", "pool": True, "server_side_binding": True},
        }
    )
    assert conninfo_to_dict(dsn) == {
        "dbname": "shop",
        "user": "web",
        "password": "s3cret",
        "host": "db.internal",
        "port": "6432",
        "sslmode": "require",
    }


def test_pgqueue_worker_runs_a_django_project_without_manage_py(
    test_dsn: str, tmp_path: Path
) -> None:
    job = ship_order.delay(1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
    env.update(DJSHOP_DATABASE_URL=test_dsn, DJANGO_SETTINGS_MODULE="djshop.settings")
    env["PYTHONPATH"] = str(PROJECT)
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pgqueue", "worker", "--app", "pgqueue.contrib.django.worker"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    worker = Worker.__new__(Worker)
    worker.process, worker.log = process, log
    try:
        worker.wait_ready()
        wait_until(lambda: app.get_job(job.id).status.value == "succeeded")
    finally:
        assert worker.stop() == 0, worker.output()
    assert "queues=default,emails" in worker.output()


def test_the_worker_module_says_what_to_set_without_django_settings(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-m", "pgqueue", "worker", "--app", "pgqueue.contrib.django.worker"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "set DJANGO_SETTINGS_MODULE" in done.stderr
    assert "Traceback" not in done.stderr
