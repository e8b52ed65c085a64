"""The dashboard's database connections: a few autocommit connections shared by its requests.

Each request borrows one for the reads (and the one action) it makes, on a worker thread, and
gives it back. However many browsers are open, the dashboard holds at most `size` connections.
Every statement has a time limit, so that a slow read never piles requests up behind it.
"""

from __future__ import annotations

import contextlib
import queue
import select
import threading
from collections.abc import Iterator
from typing import Any

import psycopg

from pgqueue.app import App
from pgqueue.errors import DatabaseUnavailable

APPLICATION_NAME = "pgqueue-dashboard"
STATEMENT_TIMEOUT_MS = 5000
BORROW_TIMEOUT = 10.0  # seconds a request waits for a free connection


def _hung_up(conn: psycopg.Connection[Any]) -> bool:
    """Whether the server spoke on an idle connection. Nothing is awaited on one (no query,
    no LISTEN), so it is the server ending it (a restart, pg_terminate_backend, an idle
    timeout): found without a round trip, instead of by the next request's 503."""
    fd = conn.fileno()
    if hasattr(select, "poll"):  # select() cannot watch a descriptor numbered 1024 or more
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable)


class ConnectionPool:
    """Up to `size` connections made on demand through `app` (its DSN and connect options),
    kept open between requests; a broken one is dropped and made again on the next borrow."""

    def __init__(self, app: App, size: int = 4) -> None:
        self._app = app
        self._idle: queue.LifoQueue[psycopg.Connection[Any]] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._all: set[psycopg.Connection[Any]] = set()
        self._closed = False

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        if not self._slots.acquire(timeout=BORROW_TIMEOUT):
            raise DatabaseUnavailable(
                "every dashboard connection stayed busy for 10 s: the database is slow"
            )
        conn: psycopg.Connection[Any] | None = None
        try:
            conn = self._take()
            yield conn
        except psycopg.Error:
            if conn is not None and (conn.broken or conn.closed):
                self._discard(conn)
                conn = None
            raise
        finally:
            if conn is not None:
                self._give_back(conn)
            self._slots.release()

    def _take(self) -> psycopg.Connection[Any]:
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return self._new()
            if conn.closed or conn.broken or _hung_up(conn):
                self._discard(conn)
                continue
            return conn

    def _new(self) -> psycopg.Connection[Any]:
        conn = self._app.connect(autocommit=True, keepalives=True)
        try:
            conn.execute(
                "SELECT set_config('application_name', %s, false), "
                "set_config('statement_timeout', %s, false)",
                (APPLICATION_NAME, str(STATEMENT_TIMEOUT_MS)),
            )
        except psycopg.Error:
            conn.close()
            raise
        with self._lock:
            self._all.add(conn)
        return conn

    def _give_back(self, conn: psycopg.Connection[Any]) -> None:
        if self._closed or conn.closed or conn.broken:
            self._discard(conn)
            return
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self._discard(conn)  # left inside a transaction by an error: not reusable
            return
        self._idle.put(conn)

    def _discard(self, conn: psycopg.Connection[Any]) -> None:
        with self._lock:
            self._all.discard(conn)
        with contextlib.suppress(psycopg.Error):
            conn.close()

    def close(self) -> None:
        self._closed = True
        with self._lock:
            conns = list(self._all)
            self._all.clear()
        for conn in conns:
            with contextlib.suppress(psycopg.Error):
                conn.close()
