"""Fixtures of the dashboard's server-side tests: the dashboard over this test's database,
driven through Starlette's TestClient (its lifespan run, so its connections close), jobs of
every status made through the public API, and helpers that read what a page offers."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import admin, periodic
from pgqueue.dashboard import create_app
from pgqueue.testing import drain

with warnings.catch_warnings():
    # Starlette announces a move to another HTTP client; httpx is what this venv has.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

PAGES = ("/", "/queues", "/jobs", "/workers", "/schedules")
LIVE_PAGES = ("/", "/queues", "/workers")
_CSRF = re.compile(r'name="csrf" value="([^"]*)"')

MakeClient = Callable[..., TestClient]


def csrf_of(html: str) -> str:
    """The CSRF token the page's forms carry."""
    match = _CSRF.search(html)
    assert match is not None, "the page has no form with a CSRF token"
    return match.group(1)


def page_token(client: TestClient, path: str = "/jobs") -> str:
    """Open `path` as a browser would (getting a session if it has none) and read its token."""
    response = client.get(path)
    assert response.status_code == 200, response.text
    return csrf_of(response.text)


def job_status(conn: psycopg.Connection[Any], job_id: int) -> str | None:
    row = conn.execute(
        "SELECT status::text FROM pgqueue_all_jobs WHERE id = %s", (job_id,)
    ).fetchone()
    return None if row is None else str(row[0])


@pytest.fixture
def make_client() -> Iterator[MakeClient]:
    """`make_client(app_or_dsn, **create_app_options)`: a TestClient of a new dashboard
    (any TestClient option, such as base_url, passed as `client=dict(...)`); closed at teardown."""
    opened: list[TestClient] = []

    def make(target: Any, client: dict[str, Any] | None = None, **options: Any) -> TestClient:
        test_client = TestClient(create_app(target, **options), **(client or {}))
        test_client.__enter__()
        opened.append(test_client)
        return test_client

    yield make
    for test_client in opened:
        test_client.__exit__(None, None, None)


@pytest.fixture
def client(app: pgqueue.App, make_client: MakeClient) -> TestClient:
    """An open dashboard (no login) over `app`."""
    return make_client(app)


@dataclass(frozen=True)
class Jobs:
    """Jobs of every status in the `default`, `mail` and `reports` queues."""

    succeeded: int
    failed: int
    cancelled: int
    queued: int
    scheduled: int
    mail_queued: int


@pytest.fixture
def jobs(app: pgqueue.App, conn: psycopg.Connection[Any]) -> Jobs:
    @app.task(max_attempts=1)
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(max_attempts=1)
    def explode(why: str) -> None:
        raise ValueError(f"exploded: {why}")

    @app.task(queue="mail")
    def send_mail(to: str) -> None: ...

    @app.task(queue="reports")
    def report(name: str) -> None: ...

    succeeded = add.delay(2, 3).id
    failed = explode.delay("on purpose").id
    assert {ran.status for ran in drain(app, queues=["default"])} == {"succeeded", "failed"}
    cancelled = report.delay("monthly").id
    admin.cancel(conn, [cancelled])
    queued = report.delay("weekly").id
    scheduled = report.apply_async(args=["yearly"], countdown=3600).id
    mail_queued = send_mail.delay("ada@example.com").id
    assert job_status(conn, succeeded) == "succeeded"
    assert job_status(conn, cancelled) == "cancelled"
    return Jobs(succeeded, failed, cancelled, queued, scheduled, mail_queued)


def write_schedules(app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    """Store the app's declared schedules, as its scheduler does at start."""
    periodic.sync_schedules(conn, app.schedules.values(), periodic.db_now(conn), app.tasks)


def database_state(conn: psycopg.Connection[Any]) -> tuple[list[Any], ...]:
    """What any action could change: every job's status and attempts, the paused queues, the
    schedules' enabled flags and last jobs."""
    return (
        conn.execute(
            "SELECT id, status::text, attempts, run_at FROM pgqueue_all_jobs ORDER BY id"
        ).fetchall(),
        conn.execute("SELECT name, paused_at FROM pgqueue_queues ORDER BY name").fetchall(),
        conn.execute(
            "SELECT name, enabled, last_job_id FROM pgqueue_periodic ORDER BY name"
        ).fetchall(),
    )
