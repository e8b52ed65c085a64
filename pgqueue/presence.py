"""A worker's presence in the database: its row in `pgqueue_workers`, the session advisory lock
that PostgreSQL releases the moment the session ends, and the heartbeat.

All of it runs on the notifier's connection and thread. After a reconnect the worker takes its
lock again under the same id if its row survived. Otherwise (it was declared lost meanwhile and
its jobs rescued, or the server still holds its old session) it registers under a new id,
takes over the jobs still running under the old one, and tells the worker, through
`on_new_registration(old_id, new_id, kept_leases)`, which claims it kept: the worker stops
every other attempt it runs, whose outcomes fencing would refuse anyway.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from pgqueue import queries
from pgqueue._version import __version__

logger = logging.getLogger("pgqueue.worker")


def default_name() -> str:
    """A worker's name when none is given: `host:pid`, distinct on each machine."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Presence:
    """Registration, lock and heartbeat of one worker process."""

    def __init__(
        self,
        name: str | None,
        queues: Sequence[str],
        concurrency: int,
        on_new_registration: Callable[[int, int, frozenset[int]], None] = lambda *_: None,
        pool: str = "thread",
        on_fleet: Callable[[dict[str, tuple[int, int]]], None] = lambda _: None,
    ) -> None:
        self.pool = pool
        # After each heartbeat: per queue, this worker's place among the live workers that
        # serve it, and how many they are (see queries.HEARTBEAT_FLEET).
        self.on_fleet = on_fleet
        self.hostname = socket.gethostname()
        self.on_new_registration = on_new_registration
        self.name = name or default_name()
        self.queues = list(queues)
        self.concurrency = concurrency
        self.worker_id: int | None = None
        self.stopping = False
        # When (time.monotonic()) the last heartbeat that found the row was sent, or the
        # registration or resume began: the database's heartbeat_at is at least that recent.
        # Written on the notifier's thread, read by the claimer (one float: no lock needed).
        self.confirmed_at = float("-inf")

    def heartbeat_age(self) -> float:
        """Seconds since the database last saw this worker alive (by this worker's clock)."""
        return time.monotonic() - self.confirmed_at

    def on_connect(self, conn: psycopg.Connection[Any]) -> None:
        """Resume under the same id if possible, else register anew (notifier thread)."""
        if self.worker_id is not None and self._resume(conn):
            logger.info("worker %s (id %d) resumed after reconnecting", self.name, self.worker_id)
        else:
            self._register(conn)

    def on_tick(self, conn: psycopg.Connection[Any]) -> None:
        """Heartbeat; if the row is gone this worker was declared lost: register again."""
        if self.worker_id is None or self.stopping:
            return
        sent = time.monotonic()
        rows = conn.execute(queries.HEARTBEAT_FLEET, {"worker_id": self.worker_id}).fetchall()
        row = rows[0] if rows else None
        if row is None and not self.stopping:
            logger.warning(
                "worker %s (id %d) was declared lost by the fleet (its jobs were rescued); "
                "registering again",
                self.name,
                self.worker_id,
            )
            conn.execute("SELECT pg_advisory_unlock_all()")
            self._register(conn)
        elif row is not None:
            self.confirmed_at = sent
            self.on_fleet({name: (place, fleet) for name, place, fleet in rows})

    def _resume(self, conn: psycopg.Connection[Any]) -> bool:
        assert self.worker_id is not None
        params = {"worker_id": self.worker_id}
        sent = time.monotonic()
        locked = conn.execute(queries.TRY_LOCK_WORKER, params).fetchone()
        if not (locked and locked[0]):
            return False  # the old session still holds it: it will be rescued in time
        if conn.execute(queries.HEARTBEAT, params).fetchone() is None:
            conn.execute("SELECT pg_advisory_unlock_all()")
            return False
        self.confirmed_at = sent
        return True

    def _register(self, conn: psycopg.Connection[Any]) -> None:
        previous = self.worker_id
        kept: list[tuple[Any, ...]] = []
        began = time.monotonic()
        # Row, lock and the jobs kept in one transaction: no rescuer can see the row without
        # the lock, nor take back a job between the old id and the new.
        with conn.transaction():
            row = conn.execute(
                queries.REGISTER_WORKER,
                {
                    "name": self.name,
                    "hostname": self.hostname,
                    "pid": os.getpid(),
                    "queues": self.queues,
                    "concurrency": self.concurrency,
                    "pool": self.pool,
                    "version": __version__,
                },
            ).fetchone()
            assert row is not None
            new_id = int(row[0])
            conn.execute(queries.LOCK_WORKER, {"worker_id": new_id})
            if previous is not None:
                kept = conn.execute(
                    queries.ADOPT_JOBS, {"worker_id": new_id, "old_worker_id": previous}
                ).fetchall()
        # Only now may claims carry the new id: a claim made under it before the commit would
        # leave its jobs under an id that does not exist if the transaction rolled back, and
        # the orphan rescue would take them back while they run here. Until now the claimer
        # claims under the old id, and such claims are either adopted above (committed before
        # ADOPT_JOBS) or given back by the worker, unstarted (answered after this line).
        self.worker_id = new_id
        self.confirmed_at = began
        if previous is not None:
            self.on_new_registration(previous, new_id, frozenset(r[0] for r in kept))
