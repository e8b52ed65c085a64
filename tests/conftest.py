"""Test fixtures: a real PostgreSQL, one fresh database per test.

`PGQUEUE_TEST_DSN` picks a server (its user must be allowed to CREATE DATABASE); unset, the
embedded development server is started under `.pgqueue/test`. A template database is migrated
once per session, and each test gets its own copy of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import pgqueue
from pgqueue import migrate
from pgqueue.config import WorkerSettings
from pgqueue.worker import Worker

ROOT = Path(__file__).resolve().parent.parent
_counter = itertools.count()


def _server_dsn() -> str:
    dsn = os.environ.get("PGQUEUE_TEST_DSN")
    if dsn:
        return dsn
    os.environ.setdefault("PGQUEUE_HOME", str(ROOT / ".pgqueue" / "test"))
    from pgqueue import _embedded

    return _embedded.embedded_dsn()


def with_dbname(dsn: str, dbname: str) -> str:
    return make_conninfo(dsn, dbname=dbname)


def _admin(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True)


def _drop(admin: psycopg.Connection[Any], name: str) -> None:
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def server_dsn() -> str:
    return _server_dsn()


@pytest.fixture(scope="session")
def template_db(server_dsn: str) -> Iterator[str]:
    name = f"pgqueue_tpl_{os.getpid()}"
    with _admin(server_dsn) as admin:
        _drop(admin, name)
        admin.execute(f'CREATE DATABASE "{name}"')
    migrate.upgrade(with_dbname(server_dsn, name))
    yield name
    with _admin(server_dsn) as admin:
        _drop(admin, name)


@pytest.fixture
def empty_dsn(server_dsn: str) -> Iterator[str]:
    """A fresh database with nothing in it (not migrated)."""
    name = f"pgqueue_t_{os.getpid()}_{next(_counter)}"
    with _admin(server_dsn) as admin:
        _drop(admin, name)
        admin.execute(f'CREATE DATABASE "{name}"')
    yield with_dbname(server_dsn, name)
    with _admin(server_dsn) as admin:
        _drop(admin, name)


@pytest.fixture
def dsn(server_dsn: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for this test alone."""
    name = f"pgqueue_t_{os.getpid()}_{next(_counter)}"
    with _admin(server_dsn) as admin:
        _drop(admin, name)
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield with_dbname(server_dsn, name)
    with _admin(server_dsn) as admin:
        _drop(admin, name)


@pytest.fixture
def app(dsn: str) -> Iterator[pgqueue.App]:
    application = pgqueue.App(dsn)
    yield application
    application.close()


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


def wait_until(
    condition: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)  # polling interval of a deadline-bound wait


class WorkerThread:
    """A real Worker running in a background thread of the test process."""

    def __init__(self, app: pgqueue.App, settings: WorkerSettings) -> None:
        self.worker = Worker(app, settings)
        self.exit_code: int | None = None
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def run() -> int:
            self._loop = asyncio.get_running_loop()
            self._started.set()
            return await self.worker.run_async()

        try:
            self.worker.preflight()
            self.exit_code = asyncio.run(run())
        except BaseException as exc:
            self.error = exc
        finally:
            self._started.set()

    def start(self) -> WorkerThread:
        self._thread.start()
        self._started.wait(10)
        wait_until(
            lambda: (
                self.error is not None
                or (hasattr(self.worker, "notifier") and self.worker.notifier.connected.is_set())
            ),
            what="worker ready",
        )
        if self.error:
            raise self.error
        return self

    def stop(self, timeout: float = 30.0) -> int | None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.worker.request_stop)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "worker thread did not stop"
        if self.error:
            raise self.error
        return self.exit_code


@pytest.fixture
def start_worker() -> Iterator[Callable[..., WorkerThread]]:
    """Start in-process workers: `start_worker(app, concurrency=4, ...)`; stopped at teardown."""
    started: list[WorkerThread] = []

    def start(app: pgqueue.App, **settings: Any) -> WorkerThread:
        settings.setdefault("poll_interval", 0.5)
        settings.setdefault("shutdown_timeout", 10.0)
        worker = WorkerThread(app, WorkerSettings(**settings)).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        with contextlib.suppress(Exception):
            worker.stop()


async def open_server_stream(
    host: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream to the PostgreSQL server at `host` and `port` as a DSN names them: a TCP
    address, or a socket directory (the embedded server listens on a Unix socket only)."""
    if host.startswith("/"):
        return await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
    return await asyncio.open_connection(host, port)


async def read_server_message(reader: asyncio.StreamReader) -> bytes:
    """One whole message of the server's side of the protocol (type byte, length, body), for
    proxies that act between two messages; IncompleteReadError when the stream ends."""
    header = await reader.readexactly(5)
    return header + await reader.readexactly(struct.unpack("!I", header[1:])[0] - 4)


def dsn_params(dsn: str) -> dict[str, Any]:
    return conninfo_to_dict(dsn)
