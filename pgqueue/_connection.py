"""One async autocommit connection of pgqueue's own, made again after it breaks: what each of a
worker's loops (claiming, writing outcomes, maintenance) holds."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import psycopg

if TYPE_CHECKING:
    from pgqueue.app import App


class ReconnectingConnection:
    """`get()` returns the connection, connecting first if there is none or it broke;
    `reset()` closes it after an error, so the next `get()` starts afresh."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def get(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await self._app.aconnect(autocommit=True)
        return self._conn

    async def reset(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self._conn.close()
        self._conn = None
