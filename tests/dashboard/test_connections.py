"""The dashboard's connections: few, named, and replaced unnoticed when the server ends them."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.conftest import wait_until
from tests.dashboard.conftest import PAGES, Jobs, MakeClient, TestClient

DASHBOARD_BACKENDS = """
SELECT pid FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'pgqueue-dashboard'
"""


def backends(conn: psycopg.Connection[Any]) -> list[int]:
    return [row[0] for row in conn.execute(DASHBOARD_BACKENDS)]


def test_pages_hold_a_few_named_connections(
    client: TestClient, conn: psycopg.Connection[Any], jobs: Jobs
) -> None:
    for _ in range(3):
        for path in PAGES:
            assert client.get(path).status_code == 200
    assert 1 <= len(backends(conn)) <= 4


def test_connections_ended_by_the_server_are_replaced_without_an_error(
    client: TestClient, conn: psycopg.Connection[Any], jobs: Jobs
) -> None:
    for path in PAGES:
        assert client.get(path).status_code == 200
    ended = backends(conn)
    assert ended
    conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (ended,))
    wait_until(lambda: not set(ended) & set(backends(conn)), what="the dashboard's backends to end")
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 200, (path, response.text)
    assert not set(ended) & set(backends(conn))


def test_a_database_without_the_schema_says_to_migrate(
    empty_dsn: str, make_client: MakeClient
) -> None:
    client = make_client(empty_dsn)
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 503, path
        assert "pgqueue migrate" in response.text, response.text
