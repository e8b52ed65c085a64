"""A worker's presence in the database: its row in `pgqueue_workers`, the session advisory lock
that PostgreSQL releases the moment the session ends, and the heartbeat.

All of it runs on the notifier's connection and thread. After a reconnect the worker takes its
lock again under the same id if its row survived; if it was declared lost meanwhile (its jobs
were rescued), it registers under a new id and its late outcomes are refused by fencing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from typing import Any

import psycopg

from pgqueue import queries

logger = logging.getLogger("pgqueue.worker")


class Presence:
    """Registration, lock and heartbeat of one worker process."""

    def __init__(self, name: str | None, queues: Sequence[str], concurrency: int) -> None:
        self.hostname = socket.gethostname()
        self.name = name or f"{self.hostname}:{os.getpid()}"
        self.queues = list(queues)
        self.concurrency = concurrency
        self.worker_id: int | None = None
        self.stopping = False

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
        row = conn.execute(queries.HEARTBEAT, {"worker_id": self.worker_id}).fetchone()
        if row is None and not self.stopping:
            logger.warning(
                "worker %s (id %d) was declared lost by the fleet (its jobs were rescued); "
                "registering again",
                self.name,
                self.worker_id,
            )
            conn.execute("SELECT pg_advisory_unlock_all()")
            self._register(conn)

    def _resume(self, conn: psycopg.Connection[Any]) -> bool:
        assert self.worker_id is not None
        params = {"worker_id": self.worker_id}
        locked = conn.execute(queries.TRY_LOCK_WORKER, params).fetchone()
        if not (locked and locked[0]):
            return False  # the old session still holds it: it will be rescued in time
        if conn.execute(queries.HEARTBEAT, params).fetchone() is None:
            conn.execute("SELECT pg_advisory_unlock_all()")
            return False
        return True

    def _register(self, conn: psycopg.Connection[Any]) -> None:
        # Row and lock in one transaction: no rescuer can see the row without the lock.
        with conn.transaction():
            row = conn.execute(
                queries.REGISTER_WORKER,
                {
                    "name": self.name,
                    "hostname": self.hostname,
                    "pid": os.getpid(),
                    "queues": self.queues,
                    "concurrency": self.concurrency,
                },
            ).fetchone()
            assert row is not None
            self.worker_id = int(row[0])
            conn.execute(queries.LOCK_WORKER, {"worker_id": self.worker_id})
