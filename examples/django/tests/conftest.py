"""Fixtures of the shop's tests: pytest-django's test database (migrated by `migrate`, pgqueue's
tables included), a clean queue for each test, and a real `manage.py pgqueue_worker`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from shop_testing import Worker

from pgqueue.contrib.django import app, dsn_for


@pytest.fixture(scope="session", autouse=True)
def close_pgqueue(django_db_setup: None) -> Iterator[None]:
    """Close pgqueue's connections before pytest-django drops the test database."""
    yield
    app.close()


@pytest.fixture
def test_dsn(transactional_db: None) -> str:
    """The libpq DSN of pytest-django's test database."""
    return dsn_for(connection.settings_dict)


@pytest.fixture(autouse=True)
def clean_queue(request: pytest.FixtureRequest, django_db_blocker: Any) -> Iterator[None]:
    """Jobs are not Django models, so Django's flush between transactional tests leaves them:
    empty pgqueue's job tables after each test that used the database."""
    yield
    if request.node.get_closest_marker("django_db") is not None:
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute("TRUNCATE pgqueue_jobs, pgqueue_finished_jobs")


@pytest.fixture
def worker(test_dsn: str, tmp_path: Path) -> Iterator[Worker]:
    running = Worker(test_dsn, tmp_path / "worker.log", "--concurrency", "4")
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()
