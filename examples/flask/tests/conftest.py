"""Fixtures for the shop's tests. pgqueue's pytest plugin gives each test a database of its
own, copied from a template made once; the template gets the shop's tables here, and `shop`
is the Flask app configured for the test's database."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import flaskshop.models  # noqa: F401  (the shop's tables, in db.metadata)
import pytest
import sqlalchemy as sa
from flask import Flask
from flaskshop import create_app
from flaskshop.extensions import db
from psycopg.conninfo import conninfo_to_dict

from pgqueue import App, migrate


def sqlalchemy_url(dsn: str) -> str:
    """A libpq DSN as the SQLAlchemy URL Flask-SQLAlchemy is configured with: its parameters,
    unchanged, in the URL's query (psycopg takes them as they are, a socket directory too)."""
    url = sa.URL.create("postgresql+psycopg", query=conninfo_to_dict(dsn))
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pgqueue_setup_database() -> Callable[[str], None]:
    """How the template every test's database copies is made: pgqueue's tables, then the
    shop's."""

    def setup(dsn: str) -> None:
        migrate.upgrade(dsn)
        engine = sa.create_engine(sqlalchemy_url(dsn))
        with engine.begin() as conn:
            db.metadata.create_all(conn)
        engine.dispose()  # a template may have no open connection when it is copied

    return setup


@pytest.fixture
def shop(pgqueue_app: App, pgqueue_dsn: str) -> Iterator[Flask]:
    """The shop on this test's database. `pgqueue_app` (the extension's App, named by the
    tests' `pgqueue_app` mark) goes back to its own database after the test."""
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": sqlalchemy_url(pgqueue_dsn)})
    yield app
    with app.app_context():
        db.engine.dispose()
