"""The pytest plugin: fixtures that give a test its own migrated database and the user's App
pointed at it. Registered by entry point, and inert until a test asks for one of its fixtures.

It adds fixtures (all named `pgqueue_*`, so they never shadow a project's own `app` or `dsn`),
one ini option and one marker, and no hook that changes how other tests are collected or run:
a test suite that does not use them runs as if the plugin were not installed. `-p
no:pgqueue.testing.plugin` removes it; with PYTEST_DISABLE_PLUGIN_AUTOLOAD set,
`-p pgqueue.testing.plugin` (or `pytest_plugins = ["pgqueue.testing.plugin"]`) brings it in.

The App: `@pytest.mark.pgqueue_app(app)` on a test or module (an App, or "module:attribute"),
else the `pgqueue_app` ini option ("myproject.tasks:app"), else `PGQUEUE_APP`; else the
fixture refuses, naming the three.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from pgqueue import migrate
from pgqueue._loading import load_app
from pgqueue.app import App
from pgqueue.testing._databases import (
    server_dsn,
    template_database,
    throwaway_database,
    using_database,
)

_APP_HELP = (
    "the App the pgqueue_app fixture points at each test's database, as module:attribute "
    "(e.g. myproject.tasks:app)"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("pgqueue_app", _APP_HELP, default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "pgqueue_app(app): the pgqueue App (or 'module:attribute') that the pgqueue_app "
        "fixture points at the test's database",
    )


@pytest.fixture(scope="session")
def pgqueue_server_dsn() -> str:
    """The PostgreSQL server the test databases are made on: PGQUEUE_TEST_DSN, else
    PGQUEUE_DSN, else DATABASE_URL, else the embedded development server."""
    return server_dsn()


@pytest.fixture(scope="session")
def pgqueue_setup_database() -> Callable[[str], None]:
    """What makes the template database every test copies: `setup(dsn)`. pgqueue's migrations
    by default; override this fixture to add your own tables (call `pgqueue.migrate.upgrade`
    too)."""
    return migrate.upgrade


@pytest.fixture(scope="session")
def pgqueue_template(
    pgqueue_server_dsn: str, pgqueue_setup_database: Callable[[str], None]
) -> Iterator[str]:
    """The name of the template database, set up once per session."""
    with template_database(pgqueue_server_dsn, pgqueue_setup_database) as name:
        yield name


@pytest.fixture
def pgqueue_dsn(pgqueue_server_dsn: str, pgqueue_template: str) -> Iterator[str]:
    """The DSN of a database for this test alone: a copy of the template, dropped after."""
    with throwaway_database(pgqueue_server_dsn, pgqueue_template) as dsn:
        yield dsn


def _configured_app(request: pytest.FixtureRequest) -> App:
    marker = request.node.get_closest_marker("pgqueue_app")
    if marker is not None:
        if len(marker.args) != 1:
            pytest.fail("@pytest.mark.pgqueue_app takes one App or 'module:attr'", pytrace=False)
        chosen = marker.args[0]
        return chosen if isinstance(chosen, App) else load_app(str(chosen))
    path = str(request.config.getini("pgqueue_app") or os.environ.get("PGQUEUE_APP") or "")
    if not path:
        # Not a new, empty App: the tasks the code under test enqueues are registered on the
        # user's App, which would then still write to the user's own database.
        pytest.fail(
            "the pgqueue_app fixture does not know your App: set `pgqueue_app = "
            "myproject.tasks:app` in your pytest configuration, or mark the test with "
            "@pytest.mark.pgqueue_app(app), or set PGQUEUE_APP",
            pytrace=False,
        )
    return load_app(path)


@pytest.fixture
def pgqueue_app(request: pytest.FixtureRequest, pgqueue_dsn: str) -> Iterator[App]:
    """Your App (see the module docstring for how it is found), pointed at this test's own
    database for the length of the test, then back at its own; it is made the current App
    (`pgqueue.current_app()`), through which shared tasks enqueue."""
    app = _configured_app(request)
    app.set_as_current()  # shared tasks the code under test enqueues go to this test's database
    with using_database(app, pgqueue_dsn):
        yield app
