"""An outcome whose commit reply is lost is sent again; the resend must not touch a later claim.

The reply is really dropped: a small TCP proxy on 127.0.0.1 sits between the completer and
PostgreSQL, lets the statement through, waits for the server's ReadyForQuery (the statement has
committed) and cuts the connection before any of the reply reaches the client. The completer
then does what it does after any lost connection: it connects again and sends the same batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import pgqueue
from pgqueue._connection import HOT_PATH_SETTINGS, ReconnectingConnection
from pgqueue.claim import claim_jobs
from pgqueue.complete import Completer
from pgqueue.outcome import ClaimedJob, RetryLater, simple_error
from tests.conftest import open_server_stream, read_server_message

DEADLINE = 30.0


class ReplyDroppingProxy:
    """Forwards PostgreSQL connections; the first time the client sends bytes containing
    `marker`, the server's reply is held back up to its ReadyForQuery, then both sides of that
    connection are closed and the reply is thrown away. New connections wait at `gate` (open
    until the cut) so that a test can act between the lost reply and the resend."""

    def __init__(self, upstream_host: str, upstream_port: int, marker: bytes) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._marker = marker
        self._armed = True
        self.dropped = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        await self.gate.wait()
        server_r, server_w = await open_server_stream(*self._upstream)
        cut = asyncio.Event()
        pumps = [
            asyncio.create_task(self._to_server(client_r, server_w, cut)),
            asyncio.create_task(self._to_client(server_r, client_w, cut)),
        ]
        try:
            # Cancelled at the proxy's close: the connection ends, as a cut one would.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for writer in (client_w, server_w):
                writer.close()
            self._tasks.discard(task)

    async def _to_server(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cut: asyncio.Event
    ) -> None:
        tail = b""
        while data := await reader.read(65536):
            if self._armed and self._marker in tail + data:
                self._armed = False
                self.gate.clear()
                cut.set()
            tail = data[-len(self._marker) :]
            writer.write(data)
            await writer.drain()

    async def _to_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cut: asyncio.Event
    ) -> None:
        # Whole messages (type byte, length): the cut falls just after a ReadyForQuery.
        with contextlib.suppress(asyncio.IncompleteReadError):
            while True:
                message = await read_server_message(reader)
                if cut.is_set():
                    if message[:1] == b"Z":  # committed: now lose the reply
                        self.dropped.set()
                        return
                    continue
                writer.write(message)
                await writer.drain()


def _through(dsn: str, port: int) -> str:
    params = conninfo_to_dict(dsn)
    params.update(host="127.0.0.1", port=str(port), sslmode="disable")
    return make_conninfo(**params)


def _job_row(conn: psycopg.Connection[Any], job_id: int) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT status::text, worker_id, attempts FROM pgqueue_jobs WHERE id = %s", (job_id,)
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_a_resent_refund_leaves_a_later_claim_of_the_job_running(
    app: pgqueue.App,
    dsn: str,
    conn: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Worker 1 gives an interrupted attempt back (a refund: the attempt is not counted); the
    refund commits but its reply is lost. Worker 2 claims the job. Worker 1's completer sends
    the refund again: it must change nothing, or worker 2's running job would be put back in
    the queue and run a second time alongside it."""

    @app.task
    def long_job() -> None: ...

    job = long_job.delay()
    params = conninfo_to_dict(dsn)
    host = str(params.get("host") or "127.0.0.1")
    port = int(params.get("port") or 5432)
    first, second = (
        int(row[0])
        for row in conn.execute(
            "INSERT INTO pgqueue_workers (name, hostname, pid, queues, concurrency)"
            " VALUES ('one', 'h', 1, '{default}', 1), ('two', 'h', 2, '{default}', 1)"
            " RETURNING id"
        ).fetchall()
    )

    async def scenario() -> None:
        proxy = ReplyDroppingProxy(host, port, marker=b'"refund": 1')
        proxied = pgqueue.App(_through(dsn, await proxy.start()))
        completer = Completer(ReconnectingConnection(proxied, HOT_PATH_SETTINGS))
        writing = asyncio.create_task(completer.run())
        try:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
                (claimed,) = (await claim_jobs(aconn, ["default"], 1, first)).jobs
                interrupted = simple_error("WorkerShutdown", "the worker stopped")
                completer.submit(RetryLater(claimed, interrupted, refund_attempt=True))
                await asyncio.wait_for(proxy.dropped.wait(), DEADLINE)
                # The refund committed: the job is queued again, its attempt given back.
                assert _job_row(conn, job.id) == ("queued", None, 0)
                (again,) = (await claim_jobs(aconn, ["default"], 1, second)).jobs
                assert isinstance(again, ClaimedJob) and again.id == job.id
            proxy.gate.set()  # the completer reconnects and sends the refund again
            assert await completer.drain(DEADLINE)
        finally:
            writing.cancel()
            await completer.close()
            await proxy.close()
            proxied.close()

    with caplog.at_level(logging.WARNING, logger="pgqueue.worker"):
        asyncio.run(scenario())
    assert _job_row(conn, job.id) == ("running", second, 1)
    assert "could not write 1 job outcome(s)" in caplog.text  # the reply was really lost
    assert "lost its lease" in caplog.text  # and the resend was refused
