"""Servers that tests start for themselves: a private PostgreSQL configured as a test needs it
(prepared transactions, few connections), a PgBouncer in front of a server, and a physical
replication client that reports a standby's xmin the way a standby with hot_standby_feedback
does.

The private PostgreSQL uses the binaries of the embedded database (pgserver) and listens on a
Unix socket in a directory of its own; it and its data are gone when stopped. As root (CI),
both servers run as the unprivileged user the embedded database uses, since neither runs as
root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import struct
import subprocess
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.conftest import wait_until

SERVICE_USER = "pgserver"  # the user pgserver itself runs PostgreSQL as, under root


def _pgserver(module: str) -> Any:
    """A module of pgserver, imported without the warnings it gives on import."""
    import importlib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(f"pgserver.{module}")


def _service_user() -> str | None:
    """Who the servers run as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    _pgserver("utils").ensure_user_exists(SERVICE_USER)
    return SERVICE_USER


def _private_dir(prefix: str, user: str | None) -> Path:
    """A fresh directory under /tmp (short enough for a socket path) that `user` owns."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if user is not None:
        import pwd

        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def _run(command: list[str], user: str | None, log: Path | None = None) -> None:
    result = subprocess.run(command, user=user, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        logged = log.read_text(errors="replace") if log is not None and log.exists() else ""
        raise RuntimeError(
            f"{' '.join(command)} failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}\n{logged}"
        )


class PrivateServer:
    """A PostgreSQL of the test's own, started with `settings` (postgres -c name=value)."""

    def __init__(self, settings: Mapping[str, str]) -> None:
        self.bin: Path = _pgserver("_commands").POSTGRES_BIN_PATH
        self.user = _service_user()
        if self.user is not None:  # let that user reach and run the binaries, as pgserver does
            utils = _pgserver("utils")
            utils.ensure_prefix_permissions(self.bin)
            readable = stat.S_IRGRP | stat.S_IROTH
            utils.ensure_folder_permissions(self.bin, stat.S_IXGRP | stat.S_IXOTH | readable)
            utils.ensure_folder_permissions(self.bin.parent / "lib", readable)
            utils.ensure_folder_permissions(self.bin.parent / "share", readable)
        self.base = _private_dir("pgqueue-pg-", self.user)
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        options = " ".join([f"-c {k}={v}" for k, v in settings.items()])
        _run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
             "--encoding=utf8", "--no-sync"],
            self.user,
        )  # fmt: skip
        _run(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "-l",
             str(self.log), "-o", f"-h '' -k {self.base} -c fsync=off {options}", "start"],
            self.user,
            self.log,
        )  # fmt: skip
        self.dsn = make_conninfo(host=str(self.base), user="postgres", dbname="postgres")

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            _run(
                [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                self.user,
            )
        shutil.rmtree(self.base, ignore_errors=True)

    @contextlib.contextmanager
    def database(self, name: str) -> Iterator[str]:
        """A fresh empty database on this server, dropped afterwards; its DSN."""
        with psycopg.connect(self.dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield make_conninfo(self.dsn, dbname=name)
        finally:
            with psycopg.connect(self.dsn, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")
    if found is None:
        raise AssertionError(
            "these tests need PgBouncer: `apt-get install pgbouncer` (CI's .ci/run does)"
        )
    return found


class PgBouncer:
    """A PgBouncer on a free port of 127.0.0.1 in `pool_mode`, passing every database name to
    the server behind `server_dsn` (trust authentication on both sides), with at most
    `pool_size` server connections per database and user."""

    def __init__(self, server_dsn: str, pool_mode: str, pool_size: int = 4) -> None:
        self.user = _service_user()
        self.base = _private_dir("pgqueue-bouncer-", self.user)
        target = conninfo_to_dict(server_dsn)
        self.port = _free_port()
        users = self.base / "users.txt"
        users.write_text('"postgres" ""\n')
        ini = self.base / "pgbouncer.ini"
        self.log = self.base / "pgbouncer.log"
        lines = [
            "[databases]",
            f"* = host={target.get('host') or '127.0.0.1'} port={target.get('port') or 5432}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = trust",
            f"auth_file = {users}",
            f"pool_mode = {pool_mode}",
            f"default_pool_size = {pool_size}",
            f"logfile = {self.log}",
            f"pidfile = {self.base / 'pgbouncer.pid'}",
        ]
        if self.user is not None:
            lines.append(f"user = {self.user}")
        ini.write_text("\n".join(lines) + "\n")
        for path in (users, ini):
            path.chmod(0o644)
        self.process = subprocess.Popen(
            [pgbouncer_binary(), str(ini)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        self.dsn = make_conninfo(server_dsn, host="127.0.0.1", port=str(self.port))
        wait_until(self._answers, timeout=30, what="PgBouncer to accept connections")

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise AssertionError(f"pgbouncer exited with {self.process.returncode}:\n{log}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        shutil.rmtree(self.base, ignore_errors=True)


# -- a standby's feedback, over the replication protocol ------------------------------------

_PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _read_until(sock: socket.socket, wanted: bytes) -> None:
    """Read the server's messages until one of type `wanted`; an ErrorResponse raises."""
    buffer = b""
    while True:
        while len(buffer) < 5 or len(buffer) < 1 + struct.unpack("!i", buffer[1:5])[0]:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the replication connection")
            buffer += chunk
        length = struct.unpack("!i", buffer[1:5])[0]
        kind, body, buffer = buffer[:1], buffer[5 : 1 + length], buffer[1 + length :]
        if kind == b"E":
            raise RuntimeError(f"replication connection: {body!r}")
        if kind == wanted:
            return


def send_standby_feedback(dsn: str, slot: str, xmin: int) -> None:
    """Connect to the server behind `dsn` (a Unix socket, trust) as a physical standby
    streaming from `slot`, send one hot-standby feedback message carrying `xmin` (a full
    transaction id, as pg_current_xact_id() returns), and wait until the slot holds it.

    The slot keeps that xmin after this standby goes away, as a real one's does.
    """
    params = conninfo_to_dict(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        start = row[0]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(f"{params['host']}/.s.PGSQL.{params.get('port') or 5432}")
        startup = b"user\0postgres\0replication\0true\0\0"
        sock.sendall(struct.pack("!ii", len(startup) + 8, 196608) + startup)
        _read_until(sock, b"Z")
        sock.sendall(_message(b"Q", f"START_REPLICATION SLOT {slot} PHYSICAL {start}\0".encode()))
        _read_until(sock, b"W")  # CopyBothResponse: streaming
        now_us = int((datetime.now(timezone.utc) - _PG_EPOCH).total_seconds() * 1_000_000)
        feedback = b"h" + struct.pack("!qIIII", now_us, xmin & 0xFFFFFFFF, xmin >> 32, 0, 0)
        sock.sendall(_message(b"d", feedback))
        with psycopg.connect(dsn, autocommit=True) as conn:
            wait_until(
                lambda: (
                    conn.execute(
                        "SELECT xmin IS NOT NULL FROM pg_replication_slots WHERE slot_name = %s",
                        (slot,),
                    ).fetchone()
                    == (True,)
                ),
                what=f"slot {slot} to hold the standby's xmin",
            )


def wait_slot_inactive(conn: psycopg.Connection[Any], slot: str) -> None:
    wait_until(
        lambda: (
            conn.execute(
                "SELECT NOT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
            == (True,)
        ),
        what=f"slot {slot}'s walsender to exit",
    )


__all__ = [
    "PgBouncer",
    "PrivateServer",
    "pgbouncer_binary",
    "send_standby_feedback",
    "wait_slot_inactive",
]
