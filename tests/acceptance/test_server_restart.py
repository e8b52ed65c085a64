"""PostgreSQL restarted while jobs run.

THIS TEST STARTS ITS OWN THROWAWAY POSTGRESQL SERVER (the binaries of the `pgserver` package,
a fresh data directory under the system temp dir, listening only on a unix socket there) and
stops and starts that server; it never touches the shared or embedded test server. The server
and its directory are removed at teardown, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest

import pgqueue
from pgqueue import migrate
from tests.acceptance import apps
from tests.acceptance.helpers import WorkerProcess, enqueue_many, stop_gracefully
from tests.conftest import wait_until

with warnings.catch_warnings():  # pgserver warns about the environment on import
    warnings.simplefilter("ignore")
    from pgserver._commands import POSTGRES_BIN_PATH
    from pgserver.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

# PostgreSQL refuses to run as root; pgserver runs it as this system user then.
SERVER_USER = "pgserver"
JOBS = 600  # 20 ms each, 4 at a time: still streaming when the server goes away


class ThrowawayServer:
    """A PostgreSQL server of this test's own, stopped and started at will."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pgqueue-restart-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.user: str | None = None
        self._output: IO[bytes] = (self.root / "pg_ctl.out").open("ab")
        if os.geteuid() == 0:
            # What pgserver itself does before running its binaries as root.
            self.user = SERVER_USER
            entry = ensure_user_exists(SERVER_USER)
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            ensure_folder_permissions(
                POSTGRES_BIN_PATH,
                stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH,
            )
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.dsn = f"postgresql://postgres@/postgres?host={self.root}"

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        # Output to a file, never a pipe: the server pg_ctl starts would inherit the pipe.
        subprocess.run(
            [str(POSTGRES_BIN_PATH / tool), "-D", str(self.data), *args],
            user=self.user,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=self._output,
            check=True,
            timeout=timeout,
        )

    def init(self) -> None:
        self._run("initdb", "--auth=trust", "--encoding=utf8", "-U", "postgres")

    def start(self) -> None:
        # No TCP at all: a unix socket in our own directory cannot collide with anything.
        options = f"-c listen_addresses='' -k {self.root}"
        self._run("pg_ctl", "-w", "-l", str(self.log), "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-w", "-m", mode, "stop")

    def remove(self) -> None:
        """Stop the server if it runs, however it can be stopped; delete its directory."""
        if (self.data / "postmaster.pid").exists():
            try:
                self.stop("immediate")
            except (subprocess.SubprocessError, OSError):
                with contextlib.suppress(Exception):
                    pid = int((self.data / "postmaster.pid").read_text().split()[0])
                    os.kill(pid, 9)
        self._output.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def output(self) -> str:
        parts = [p.read_text(errors="replace") for p in (self.root / "pg_ctl.out", self.log)]
        return "\n".join(parts)


@pytest.fixture
def throwaway_server() -> Iterator[ThrowawayServer]:
    server = ThrowawayServer()
    try:
        server.init()
        server.start()
        yield server
    finally:
        print(f"----- throwaway server output:\n{server.output()}")
        server.remove()


@pytest.fixture
def throwaway_dsn(throwaway_server: ThrowawayServer) -> str:
    migrate.upgrade(throwaway_server.dsn)
    with psycopg.connect(throwaway_server.dsn, autocommit=True) as conn:
        conn.execute(apps.TABLES_DDL)
    return throwaway_server.dsn


def finished_jobs(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pgqueue_all_jobs WHERE status NOT IN ('queued', 'running')"
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_worker_survives_a_restart_of_its_own_throwaway_postgresql_server(
    throwaway_server: ThrowawayServer, throwaway_dsn: str, tmp_path: Path, record_property: Any
) -> None:
    worker = WorkerProcess(throwaway_dsn, tmp_path / "worker.log", ["--concurrency", "4"])
    client = pgqueue.App(throwaway_dsn)
    # The application's side of the outage: a task known to its App under the same name.
    app_steady = client.task(name=apps.steady.name)(apps.steady.fn)
    held: psycopg.Connection[Any] | None = None
    try:
        worker.launch().wait_ready()
        db = psycopg.connect(throwaway_dsn, autocommit=True)
        with db:
            enqueue_many(
                db, [(apps.steady if n % 2 else apps.asteady, (n, 0.02)) for n in range(JOBS)]
            )
            wait_until(lambda: finished_jobs(db) >= 50, timeout=60, what="the stream to flow")
            app_steady.delay(JOBS)  # the app's connection is open when the server goes away
        enqueued = JOBS + 1

        held = psycopg.connect(throwaway_dsn, autocommit=True)  # open across the outage
        row = held.execute(
            "SELECT count(*) FROM pgqueue_all_jobs WHERE status = 'running'"
        ).fetchone()
        assert row is not None
        in_flight = int(row[0])
        stopped_at = time.monotonic()
        throwaway_server.stop("fast")  # ends every session, as a restart does
        # Enqueueing while the server is down says so; it never pretends to have succeeded.
        with pytest.raises(pgqueue.DatabaseUnavailable):
            app_steady.delay(JOBS + 1)
        with pytest.raises(pgqueue.DatabaseUnavailable):
            apps.steady.apply_async(args=(JOBS + 1,), connection=held)
        # Down long enough for the worker to fail to connect again and again, and for its
        # last heartbeat to be older than the fleet's lock grace (2 s) when the server is back.
        worker.wait_for_log("reconnecting in 1.0s: could not connect to the database")
        assert worker.poll() is None, "the worker waits for the server"

        throwaway_server.start()
        restarted_at = time.monotonic()
        downtime = restarted_at - stopped_at
        db = psycopg.connect(throwaway_dsn, autocommit=True)
        with db:
            before = finished_jobs(db)
            wait_until(
                lambda: finished_jobs(db) > before, timeout=60, interval=0.05, what="progress"
            )
            recovered_after = time.monotonic() - restarted_at
            app_steady.delay(JOBS + 2)  # the app reconnects by itself too
            enqueued += 1
            wait_until(
                lambda: finished_jobs(db) == enqueued,
                timeout=120,
                interval=0.1,
                what="every job to finish",
            )
            record_property("restart_recovery_seconds", round(recovered_after, 2))
            print(
                f"server down for {downtime:.2f}s; the worker finished its next job "
                f"{recovered_after:.2f}s after the server was back"
            )
            assert worker.poll() is None, "the same worker process carried on"
            statuses = db.execute(
                "SELECT status::text, count(*) FROM pgqueue_all_jobs GROUP BY 1"
            ).fetchall()
            assert statuses == [("succeeded", enqueued)], "none lost, none failed"
            row = db.execute(
                "SELECT count(*) FROM pgqueue_all_jobs WHERE result = args -> 0"
            ).fetchone()
            assert row == (enqueued,)
            assert db.execute(
                "SELECT count(*) FROM pgqueue_all_jobs WHERE (args -> 0)::int = %s", (JOBS + 1,)
            ).fetchone() == (0,), "the refused enqueue wrote nothing"
            # The worker came back within the lock grace, which runs from the server's start:
            # it kept its jobs, wrote the outcomes it held, and no job ran twice.
            row = db.execute(
                "SELECT count(DISTINCT job_id), (SELECT count(*) FROM"
                " (SELECT DISTINCT job_id, attempt, pid FROM acceptance_executions) AS e)"
                " FROM acceptance_executions"
            ).fetchone()
            assert row is not None
            executed, executions = row
            assert executed == enqueued, "every job ran"
            duplicates = executions - executed
            print(f"duplicate executions: {duplicates} (in flight at the stop: {in_flight})")
            assert duplicates == 0
            assert worker.log_lines("resumed after reconnecting")
            assert not worker.log_lines("its worker was lost")
        assert stop_gracefully(worker) == 0
    finally:
        if held is not None:
            held.close()
        client.close()
        worker.cleanup()
        print(f"----- worker log:\n{worker.log()}")
