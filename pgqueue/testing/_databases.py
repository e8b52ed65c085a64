"""Throwaway databases for tests: a template migrated once, a copy of it per test, and an App
pointed at a copy for the length of a test."""

from __future__ import annotations

import contextlib
import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgqueue import _embedded, migrate
from pgqueue.config import hide_password, normalize_dsn
from pgqueue.errors import ConfigurationError, DatabaseUnavailable

if TYPE_CHECKING:
    from pgqueue.app import App

_counter = itertools.count()


def server_dsn() -> str:
    """The server tests make their databases on: `PGQUEUE_TEST_DSN`, else `PGQUEUE_DSN`, else
    `DATABASE_URL`, else the embedded development server. Its user must be allowed to
    CREATE DATABASE; the database it names is only connected to, never written."""
    for name in ("PGQUEUE_TEST_DSN", "PGQUEUE_DSN", "DATABASE_URL"):
        value = os.environ.get(name)
        if value:
            return normalize_dsn(value)
    return _embedded.embedded_dsn()


def _admin(dsn: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        detail = hide_password(" ".join(str(exc).split()), dsn)
        raise DatabaseUnavailable(f"could not connect to the test server: {detail}") from None


def create_database(dsn: str, template: str | None = None) -> str:
    """Create a new database on `dsn`'s server (a copy of `template` if given); returns its
    DSN. Its name starts with `pgqueue_test_`."""
    name = f"pgqueue_test_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with _admin(dsn) as admin:
        try:
            admin.execute(statement)
        except psycopg.errors.InsufficientPrivilege:
            raise ConfigurationError(
                "the test server's user may not CREATE DATABASE: set PGQUEUE_TEST_DSN to a "
                "server and user that may (ALTER ROLE ... CREATEDB)"
            ) from None
    return make_conninfo(dsn, dbname=name)


def drop_database(server: str, name: str) -> None:
    """Drop database `name` on `server`'s server, ending its sessions."""
    with _admin(server) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def database_name(dsn: str) -> str:
    return str(conninfo_to_dict(dsn)["dbname"])


@contextlib.contextmanager
def template_database(server: str, setup: Callable[[str], None] = migrate.upgrade) -> Iterator[str]:
    """A database made once and set up by `setup(dsn)` (default: pgqueue's migrations), for
    `throwaway_database` to copy; dropped at the end. Yields its name."""
    dsn = create_database(server)
    try:
        setup(dsn)
        yield database_name(dsn)
    finally:
        drop_database(server, database_name(dsn))


@contextlib.contextmanager
def throwaway_database(server: str, template: str) -> Iterator[str]:
    """A copy of `template` for one test; dropped at the end. Yields its DSN."""
    dsn = create_database(server, template)
    try:
        yield dsn
    finally:
        drop_database(server, database_name(dsn))


@contextlib.contextmanager
def using_database(app: App, dsn: str) -> Iterator[App]:
    """Point `app` (the user's own, with its tasks) at `dsn` within the block, then back at
    what it used before. Its shared connections are closed on the way in and out."""
    saved = (app._dsn_argument, app._dsn)
    app.set_dsn(dsn)
    _forget_async_connections(app)
    try:
        yield app
    finally:
        app.close()
        _forget_async_connections(app)
        app._dsn_argument, app._dsn = saved


def _forget_async_connections(app: App) -> None:
    """Close the app's shared async connections, one per event loop, so that none still goes
    to the database the app used before. They are idle, and may belong to loops other than
    the running one (or to none): libpq closes them here, without a round trip."""
    conns = list(app._async_conns.values())
    app._async_conns.clear()
    for conn in conns:
        conn.pgconn.finish()
