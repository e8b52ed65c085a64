"""A worker's presence and its claims: a job rescued from a worker and claimed again by it runs
once; a worker whose heartbeat goes unanswered stops claiming; claims never carry an id whose
registration has not committed; a claim whose reply is slow is not taken for a stray one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import pgqueue
from pgqueue import queries
from pgqueue import worker as worker_module
from pgqueue.app import KEEPALIVE_PARAMS
from pgqueue.schema import ADVISORY_LOCK_NAMESPACE
from tests.conftest import open_server_stream, read_server_message, wait_until

HOLD_KEY = 424242  # the advisory lock a held heartbeat waits for


@contextlib.contextmanager
def heartbeats_held(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """While inside, every UPDATE of pgqueue_workers (a worker's heartbeat) waits for an
    advisory lock this connection holds: the heartbeat hangs, as on a connection that stopped
    answering, and the notifier stays `connected`. The yielded connection holds the lock, so
    its own updates of pgqueue_workers go through."""
    with psycopg.connect(dsn, autocommit=True) as holder:
        holder.execute(
            f"""
            CREATE FUNCTION test_hold_heartbeat() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_advisory_xact_lock({HOLD_KEY}); RETURN NULL; END $$;
            CREATE TRIGGER test_hold_heartbeat BEFORE UPDATE ON pgqueue_workers
            FOR EACH STATEMENT EXECUTE FUNCTION test_hold_heartbeat();
            """
        )
        holder.execute("SELECT pg_advisory_lock(%s)", (HOLD_KEY,))
        try:
            wait_until(
                lambda: holder.execute(
                    "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = %s"
                    " AND objsubid = 1 AND NOT granted",
                    (HOLD_KEY,),
                ).fetchone(),
                what="the worker's heartbeat to hang",
            )
            yield holder
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", (HOLD_KEY,))
            holder.execute("DROP TRIGGER test_hold_heartbeat ON pgqueue_workers")


def _rescue(conn: psycopg.Connection[Any], worker_id: int) -> None:
    """What a rescuer does to a worker whose heartbeat is stale (its own maintenance, here)."""
    conn.execute(
        "UPDATE pgqueue_workers SET heartbeat_at = now() - interval '1 hour' WHERE id = %s",
        (worker_id,),
    )
    conn.execute(queries.RESCUE_LOST_JOBS, {"lock_grace": 60.0, "heartbeat_timeout": 60.0})


def test_a_job_rescued_and_claimed_again_by_its_worker_stops_the_earlier_attempt(
    app: pgqueue.App,
    dsn: str,
    conn: psycopg.Connection[Any],
    start_worker: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = {1: threading.Event(), 2: threading.Event()}
    first_cancelled = threading.Event()
    finish_second = threading.Event()

    @app.task(max_attempts=3)
    async def long_async() -> int:
        context = pgqueue.current_job()
        assert context is not None
        started[context.attempt].set()
        if context.attempt == 1:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                first_cancelled.set()
                raise
        await asyncio.to_thread(finish_second.wait, 30)
        return context.attempt

    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    worker = start_worker(app, concurrency=2, heartbeat_interval=0.2, heartbeat_timeout=120.0)
    worker_id = worker.worker.presence.worker_id
    job = long_async.delay()
    assert started[1].wait(15)

    with heartbeats_held(dsn) as holder:
        # The fleet (here: the test) declares the worker lost while its heartbeat hangs; it
        # still thinks itself registered, and claims the rescued job again.
        _rescue(holder, worker_id)
        assert started[2].wait(15), "the rescued job was not claimed again"
        assert first_cancelled.wait(15), "the earlier attempt was not stopped"
        # One slot for the attempt that runs, none for the one that was stopped.
        wait_until(lambda: worker.worker.free_slots() == 1, what="one slot in use")
    finish_second.set()
    assert job.wait(timeout=15) == 2
    assert f"job {job.id} {long_async.name} attempt 1/3: cancelled; its lease was lost" in (
        caplog.text
    )


def test_a_worker_whose_heartbeat_hangs_stops_claiming_until_it_is_answered(
    app: pgqueue.App,
    dsn: str,
    start_worker: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past half the heartbeat timeout the worker may be declared lost at any moment (its
    own maintenance does it here): a job it claimed then would be rescued from under it."""
    ran_under: list[int | None] = []

    @app.task
    def quick() -> None:
        ran_under.append(worker.worker.presence.worker_id)

    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    worker = start_worker(
        app, concurrency=2, heartbeat_interval=0.2, heartbeat_timeout=2.0, rescue_interval=0.1
    )
    old_id = worker.worker.presence.worker_id
    with heartbeats_held(dsn) as holder:
        # The worker's own maintenance finds its heartbeat stale and removes its row.
        wait_until(
            lambda: (
                not holder.execute(
                    "SELECT 1 FROM pgqueue_workers WHERE id = %s", (old_id,)
                ).fetchone()
            ),
            what="the worker to be declared lost",
        )
        job = quick.delay()
        wait_until(lambda: "not claiming until one is" in caplog.text, what="claims paused")
    # The heartbeat finds the row gone: the worker registers again and claims under its new id.
    job.wait(timeout=15)
    assert ran_under and ran_under[0] not in (None, old_id)
    assert "heartbeat answered again: claiming" in caplog.text


def test_the_listening_connection_fails_when_its_network_does(
    app: pgqueue.App, dsn: str, start_worker: Callable[..., Any]
) -> None:
    """TCP keepalives and a user timeout on the notifier's connection, so that a hung network
    fails it within seconds; what the DSN sets wins."""
    worker = start_worker(app, concurrency=1)
    with worker.worker.notifier._connect() as listening:
        params = listening.info.get_parameters()
    for name, value in KEEPALIVE_PARAMS.items():
        assert params.get(name) == str(value), name
    own = pgqueue.App(make_conninfo(dsn, keepalives_idle="42"))
    try:
        with own.connect(keepalives=True) as connection:
            assert connection.info.get_parameters()["keepalives_idle"] == "42"
    finally:
        own.close()


def _next_worker_id(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END"
        " FROM pgqueue_workers_id_seq"
    ).fetchone()
    assert row is not None
    return int(row[0])


def _worker_lock_waiter(conn: psycopg.Connection[Any], worker_id: int) -> int | None:
    row = conn.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::oid"
        " AND objid = %s::oid AND objsubid = 2 AND NOT granted",
        (ADVISORY_LOCK_NAMESPACE, worker_id),
    ).fetchone()
    return None if row is None else int(row[0])


def test_claims_made_while_the_worker_registers_again_carry_a_committed_id(
    app: pgqueue.App,
    dsn: str,
    conn: psycopg.Connection[Any],
    start_worker: Callable[..., Any],
) -> None:
    """A registration whose transaction rolls back leaves no job under its id: the orphan
    rescue would take such a job back while it runs."""
    release = threading.Event()

    @app.task
    def waits() -> str:
        release.wait(30)
        return "done"

    worker = start_worker(app, concurrency=2, heartbeat_interval=0.2, heartbeat_timeout=120.0)
    old_id = worker.worker.presence.worker_id
    doomed = _next_worker_id(conn)
    with psycopg.connect(dsn, autocommit=True) as blocker:
        # The next registration will wait for its lock, inside its transaction.
        blocker.execute("SELECT pg_advisory_lock(%s, %s)", (ADVISORY_LOCK_NAMESPACE, doomed))
        conn.execute("DELETE FROM pgqueue_workers WHERE id = %s", (old_id,))
        notifier_pid = wait_until(
            lambda: _worker_lock_waiter(conn, doomed), what="a registration waiting for its lock"
        )
        job = waits.delay()
        wait_until(lambda: job.refresh().status is pgqueue.JobStatus.RUNNING, what="claimed")
        # The registration fails: its row and id are rolled back.
        conn.execute("SELECT pg_terminate_backend(%s)", (notifier_pid,))
        wait_until(
            lambda: worker.worker.presence.worker_id not in (old_id, doomed),
            what="a new registration",
        )
    new_id = worker.worker.presence.worker_id
    # Taken over under the id that exists, out of the orphan rescue's reach.
    wait_until(
        lambda: (
            conn.execute("SELECT worker_id FROM pgqueue_jobs WHERE id = %s", (job.id,)).fetchone()
            == (new_id,)
        ),
        what="the job to be under the new id",
    )
    release.set()
    assert job.wait(timeout=15) == "done"
    assert job.refresh().attempts == 1 and job.error is None


class ReplyHoldingProxy:
    """Forwards PostgreSQL connections on a thread of its own; once a reply from the server
    contains `marker`, that connection's replies are held back (the statement has committed)
    until `release()`."""

    def __init__(self, upstream: tuple[str, int], marker: bytes) -> None:
        self._upstream = upstream
        self._marker = marker
        self.holding = threading.Event()
        self._released = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self.port = 0

    def start(self) -> int:
        self._thread.start()
        assert self._ready.wait(10)
        return self.port

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self._released.set()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _main(self) -> None:
        async def serve() -> None:
            server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = int(server.sockets[0].getsockname()[1])
            self._ready.set()

        self._loop.run_until_complete(serve())
        self._loop.run_forever()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await open_server_stream(*self._upstream)

        async def to_server() -> None:
            while data := await client_r.read(65536):
                server_w.write(data)
                await server_w.drain()

        async def to_client() -> None:
            held = False
            with contextlib.suppress(asyncio.IncompleteReadError):
                while True:
                    message = await read_server_message(server_r)
                    if not held and self._marker in message and not self._released.is_set():
                        held = True
                        self.holding.set()
                        await asyncio.to_thread(self._released.wait)
                    client_w.write(message)
                    await client_w.drain()

        pumps = [asyncio.create_task(to_server()), asyncio.create_task(to_client())]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for writer in (client_w, server_w):
                writer.close()


def test_a_claim_whose_reply_is_slow_is_not_given_back_as_a_stray(
    dsn: str,
    conn: psycopg.Connection[Any],
    start_worker: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its jobs are running in the database and not yet in the worker: the stray check must
    not give them back, or they would run here while queued there. (The check takes its turn
    on the connection the claim holds, so it runs only once the reply is in.)"""
    # Every maintenance pass checks for strays, and counts any job it does not run.
    monkeypatch.setattr(worker_module, "STRAY_AGE", 0.0)
    monkeypatch.setattr(worker_module, "STRAY_CHECK_INTERVAL", 0.0)
    params = conninfo_to_dict(dsn)
    proxy = ReplyHoldingProxy(
        (str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)),
        marker=b"slow_reply_task",
    )
    port = proxy.start()
    app = pgqueue.App(make_conninfo(dsn, host="127.0.0.1", port=str(port), sslmode="disable"))
    direct = pgqueue.App(dsn)
    try:

        @app.task(name="slow_reply_task")
        def slow_reply_task() -> str:
            return "ran once"

        @direct.task(name="expiring", queue="nobody")
        def expiring() -> None: ...

        enqueuer = direct.task(name="slow_reply_task")(lambda: None)
        worker = start_worker(app, concurrency=1, rescue_interval=0.05)
        job = enqueuer.delay()
        assert proxy.holding.wait(15), "the claim's reply was not held"
        doomed = expiring.apply_async(expires=0.001)
        assert job.refresh().status is pgqueue.JobStatus.RUNNING
        proxy.release()
        assert job.wait(timeout=15) == "ran once"
        # Two maintenance passes since the reply came, each seen to end a job that expired:
        # the stray check of the first ran between them.
        for _ in range(2):
            wait_until(
                lambda doomed=doomed: doomed.refresh().status is pgqueue.JobStatus.CANCELLED,
                what="a maintenance pass",
            )
            doomed = expiring.apply_async(expires=0.001)
        assert job.refresh().attempts == 1
        assert job.refresh().status is pgqueue.JobStatus.SUCCEEDED
        worker.stop()
    finally:
        proxy.release()
        direct.close()
        app.close()
        proxy.close()
