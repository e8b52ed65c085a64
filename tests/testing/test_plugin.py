"""The pytest plugin as users meet it: a user's project run by pytest in a subprocess, with the
plugin loaded from its entry point, and inert for tests that do not ask for it."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

import pgqueue
from pgqueue.testing import throwaway_database, using_database
from pgqueue.testing._databases import database_name

pytest_plugins = ["pytester"]

USER_APP = """
import pgqueue

app = pgqueue.App()  # the user's own app: its DSN comes from their environment

@app.task(queue="mail", max_attempts=2, autoretry_for=(ConnectionError,))
def send_welcome(name: str) -> str:
    job = pgqueue.current_job()
    if job.attempt == 1:
        raise ConnectionError("smtp down")
    return f"hello {name}"

def signup(name: str) -> None:
    send_welcome.apply_async(args=(name,), countdown=5)
"""

USER_TESTS = """
import pgqueue
import pytest
from pgqueue.testing import assert_enqueued, drain, enqueued

import myproject


def test_signup_sends_a_welcome(pgqueue_app):
    assert pgqueue_app is myproject.app
    myproject.signup("ada")
    assert_enqueued(myproject.send_welcome, args=["ada"], queue="mail", countdown=5)
    assert drain(pgqueue_app) == []  # not due for 5 seconds
    myproject.send_welcome.delay("bob")
    assert [(r.status, r.result) for r in drain(pgqueue_app)] == [
        ("queued", None), ("succeeded", "hello bob")
    ]


def test_each_test_has_a_fresh_database(pgqueue_app, pgqueue_dsn):
    assert enqueued(pgqueue_app) == []
    assert pgqueue_app.dsn == pgqueue_dsn and "dbname=pgqueue_test_" in pgqueue_dsn


other = pgqueue.App()


@pytest.mark.pgqueue_app(other)
def test_a_marker_picks_another_app(pgqueue_app):
    assert pgqueue_app is other


def test_the_projects_own_fixtures_are_untouched(app, dsn):
    assert (app, dsn) == ("the project's app", "the project's dsn")
"""

USER_CONFTEST = """
import pytest

@pytest.fixture
def app():
    return "the project's app"

@pytest.fixture
def dsn():
    return "the project's dsn"
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(myproject=USER_APP, conftest=USER_CONFTEST, test_user=USER_TESTS)
    pytester.makeini("[pytest]\npgqueue_app = myproject:app\n")
    return pytester


def _test_databases(server_dsn: str) -> set[str]:
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'pgqueue\\_test\\_%%'"
        ).fetchall()
    return {name for (name,) in rows}


def test_a_users_tests_run_on_throwaway_databases_with_their_app(
    project: pytest.Pytester, server_dsn: str
) -> None:
    before = _test_databases(server_dsn)
    # The user's app points at their own database; the plugin moves it for each test.
    project._monkeypatch.setenv("PGQUEUE_DSN", server_dsn)
    project._monkeypatch.delenv("PGQUEUE_TEST_DSN", raising=False)
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    assert _test_databases(server_dsn) <= before  # every one made was dropped


def test_the_plugin_is_inert_for_tests_that_do_not_ask_for_it(project: pytest.Pytester) -> None:
    # No reachable server: had the plugin touched a database, these tests would fail.
    project._monkeypatch.setenv("PGQUEUE_TEST_DSN", "postgresql://nobody@127.0.0.1:1/none")
    result = project.runpytest_subprocess(
        "-p", "no:cacheprovider", "-k", "own_fixtures", "--fixtures"
    )
    listed = result.stdout.str()
    assert "pgqueue_app --" in listed and "pgqueue_dsn --" in listed
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-k", "own_fixtures")
    result.assert_outcomes(passed=1, deselected=3)


def test_a_test_asking_for_a_database_without_a_server_says_why(
    project: pytest.Pytester,
) -> None:
    project._monkeypatch.setenv("PGQUEUE_TEST_DSN", "postgresql://nobody@127.0.0.1:1/none")
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-k", "fresh_database")
    result.assert_outcomes(errors=1, deselected=3)
    result.stdout.fnmatch_lines(["*DatabaseUnavailable: could not connect to the test server*"])


def test_the_app_fixture_without_an_app_configured_says_how_to_configure_one(
    project: pytest.Pytester, server_dsn: str
) -> None:
    project.makeini("[pytest]\n")
    project._monkeypatch.setenv("PGQUEUE_TEST_DSN", server_dsn)
    project._monkeypatch.delenv("PGQUEUE_APP", raising=False)
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-k", "fresh or marker")
    result.assert_outcomes(passed=1, errors=1, deselected=2)
    result.stdout.fnmatch_lines(
        ["*the pgqueue_app fixture does not know your App: set `pgqueue_app = myproject*"]
    )


def test_the_plugin_can_be_left_out_or_brought_in_by_name(
    project: pytest.Pytester, server_dsn: str
) -> None:
    project._monkeypatch.setenv("PGQUEUE_TEST_DSN", server_dsn)
    result = project.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:pgqueue.testing.plugin", "-k", "fresh_database"
    )
    result.assert_outcomes(errors=1, deselected=3)
    result.stdout.fnmatch_lines(["*fixture 'pgqueue_app' not found*"])

    # Named as well as loaded from its entry point: registered once.
    result = project.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "pgqueue.testing.plugin", "-k", "fresh_database"
    )
    result.assert_outcomes(passed=1, deselected=3)

    project._monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = project.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "pgqueue.testing.plugin", "-k", "fresh_database"
    )
    result.assert_outcomes(passed=1, deselected=3)


def test_using_database_points_an_app_there_and_back(server_dsn: str, template_db: str) -> None:
    app = pgqueue.App("postgresql://nobody@127.0.0.1:1/own")
    with throwaway_database(server_dsn, template_db) as dsn, using_database(app, dsn):
        assert app.dsn == dsn
        assert app.connect().execute("SELECT 1").fetchone() == (1,)
    assert app.dsn == "postgresql://nobody@127.0.0.1:1/own"


def test_using_database_leaves_no_async_connection_to_the_other_database(
    server_dsn: str, template_db: str
) -> None:
    app = pgqueue.App(server_dsn)

    async def current_database() -> str:
        conn = await app._ashared_connection()
        row = await (await conn.execute("SELECT current_database()")).fetchone()
        assert row is not None
        return str(row[0])

    async def main() -> None:
        before = await current_database()
        with throwaway_database(server_dsn, template_db) as dsn:
            with using_database(app, dsn):
                assert await current_database() == database_name(dsn)
            assert await current_database() == before
        await app.aclose()

    asyncio.run(main())
