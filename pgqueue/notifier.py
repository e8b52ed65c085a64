"""One LISTEN connection per worker process, on its own thread; reconnects; wakes the claimer.

The same session carries the worker's presence (its session advisory lock, see `worker.py`), so
it runs on a thread of its own: a busy event loop or a CPU-bound task cannot starve the
heartbeat and get a healthy worker declared lost. Between two waits for notifications it also
runs the periodic scheduler's passes, which then need no connection of their own.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

logger = logging.getLogger("pgqueue.worker")

Conn = psycopg.Connection[Any]


class Notifier(threading.Thread):
    """Keeps a LISTEN session alive.

    `on_connect(conn)` runs on every (re)connection before LISTEN, `on_ready()` once listening
    (notifications may have been missed while away), `on_tick(conn)` every `tick_interval`
    seconds, `on_due(conn)` at once and then whenever the seconds it returns have passed, and
    `on_notify(channel, payload)` for each notification. A lost connection is logged, reported
    to `on_lost()` (if it had been listening) and made again with backoff.
    """

    def __init__(
        self,
        connect: Callable[[], Conn],
        channels: Sequence[str],
        on_notify: Callable[[str, str], None],
        on_connect: Callable[[Conn], None],
        on_tick: Callable[[Conn], None],
        tick_interval: float,
        on_ready: Callable[[], None] = lambda: None,
        on_lost: Callable[[], None] = lambda: None,
        on_due: Callable[[Conn], float] | None = None,
    ) -> None:
        super().__init__(name="pgqueue-notifier", daemon=True)
        self._connect = connect
        self._channels = tuple(channels)
        self._on_notify = on_notify
        self._on_connect = on_connect
        self._on_tick = on_tick
        self._on_ready = on_ready
        self._on_lost = on_lost
        self._on_due = on_due
        self._tick_interval = tick_interval
        self._stop_event = threading.Event()
        self.connected = threading.Event()
        self.failure: BaseException | None = None

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        backoff = 0.1
        while not self._stop_event.is_set():
            conn: Conn | None = None
            listening = False
            try:
                conn = self._connect()
                self._on_connect(conn)
                for channel in self._channels:
                    conn.execute(f"LISTEN {channel}")
                self.connected.set()
                listening = True
                self._on_ready()
                backoff = 0.1
                next_tick = time.monotonic() + self._tick_interval
                next_due = time.monotonic() if self._on_due is not None else math.inf
                while not self._stop_event.is_set():
                    wait = min(next_tick, next_due) - time.monotonic()
                    for notify in conn.notifies(timeout=max(wait, 0.0)):
                        self._on_notify(notify.channel, notify.payload)
                    if self._stop_event.is_set():
                        break
                    if time.monotonic() >= next_tick:
                        self._on_tick(conn)
                        next_tick = time.monotonic() + self._tick_interval
                    if self._on_due is not None and time.monotonic() >= next_due:
                        next_due = time.monotonic() + self._on_due(conn)
            except Exception as exc:
                self.connected.clear()
                self.failure = exc
                if self._stop_event.is_set():
                    break
                if listening:
                    self._on_lost()
                logger.warning(
                    "lost the listening connection, reconnecting in %.1fs: %s",
                    backoff,
                    " ".join(str(exc).split()) or type(exc).__name__,
                )
                self._stop_event.wait(backoff)
                # At most 1 s: back within the default lock grace (2 s) of the server's return,
                # this worker keeps its jobs.
                backoff = min(backoff * 2, 1.0)
            finally:
                self.connected.clear()
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
