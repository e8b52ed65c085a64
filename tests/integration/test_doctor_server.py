"""`pgqueue doctor`'s checks of what only a server of the test's own can provoke safely, and of a
PgBouncer in front of the test database.

The private server (tests/servers.py) allows prepared transactions, which the shared test
servers do not, and few connections; its NOTIFY queue and replication slots are its own, so
filling the one and pinning the other disturbs no other test.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import IsolationLevel
from psycopg.conninfo import make_conninfo

from pgqueue import doctor
from pgqueue.doctor import Level, Thresholds
from pgqueue.inspect import server
from tests.servers import PgBouncer, PrivateServer, send_standby_feedback, wait_slot_inactive

Conn = psycopg.Connection[Any]
_names = itertools.count()


@pytest.fixture(scope="module")
def private_server() -> Iterator[PrivateServer]:
    pg = PrivateServer({"max_prepared_transactions": "4", "max_connections": "20"})
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture
def private_dsn(private_server: PrivateServer) -> Iterator[str]:
    with private_server.database(f"doctor_{next(_names)}") as dsn:
        yield dsn


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def test_a_prepared_transaction_is_named_by_its_gid(private_dsn: str) -> None:
    gid = _unique("doctor_test")
    preparer = psycopg.connect(private_dsn)
    try:
        preparer.tpc_begin(gid)
        preparer.execute("SELECT pg_current_xact_id()")  # the transaction gets its id
        preparer.tpc_prepare()
    finally:
        preparer.close()  # the prepared transaction outlives its session
    try:
        with psycopg.connect(private_dsn, autocommit=True) as conn:
            holders = server.xmin_holders(conn)
            assert [(h.kind, h.gid) for h in holders] == [("prepared transaction", gid)]
            assert server.horizon_age_seconds(conn) > 0

            finding = doctor.check_xmin_horizon(conn, Thresholds(xmin_warn=0))
            assert finding.level is Level.WARN
            assert finding.found.startswith(f"oldest holder: prepared transaction {gid!r}")
            assert f"ROLLBACK PREPARED {gid!r}" in finding.advice
            failed = doctor.check_xmin_horizon(conn, Thresholds(xmin_fail=0))
            assert failed.level is Level.FAIL
    finally:
        with psycopg.connect(private_dsn, autocommit=True) as conn:
            conn.execute(f"ROLLBACK PREPARED '{gid}'")


def test_a_replication_slot_left_by_a_standby_holds_the_horizon(private_dsn: str) -> None:
    slot = _unique("doctor_slot")
    with psycopg.connect(private_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
        try:
            row = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
            assert row is not None
            # A standby with hot_standby_feedback reports its oldest snapshot, then goes away.
            send_standby_feedback(private_dsn, slot, int(row[0]))
            wait_slot_inactive(conn, slot)

            finding = doctor.check_xmin_horizon(conn, Thresholds())
            assert finding.level is Level.FAIL  # nothing will ever move it on
            assert f"replication slot {slot!r} (inactive)" in finding.found
            assert f"pg_drop_replication_slot({slot!r})" in finding.advice
            holder = finding.data["holders"][0]
            assert (holder["kind"], holder["age_seconds"]) == ("replication slot", None)
        finally:
            wait_slot_inactive(conn, slot)
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def test_a_role_without_pg_read_all_stats_still_sees_the_holders_pid(private_dsn: str) -> None:
    role = _unique("doctor_role")
    with psycopg.connect(private_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        try:
            with psycopg.connect(private_dsn, application_name="ledger") as holder:
                holder.isolation_level = IsolationLevel.REPEATABLE_READ
                holder.execute("SELECT 1")
                with psycopg.connect(
                    make_conninfo(private_dsn, user=role), autocommit=True
                ) as conn:
                    finding = doctor.check_xmin_horizon(conn, Thresholds(xmin_warn=0))
                    assert (
                        f"pid {holder.info.backend_pid} (application 'ledger', user postgres"
                        in (finding.found)
                    )
                    assert "grant pg_read_all_stats" in finding.found
                    # The server's own processes are not counted as connections in use.
                    seen = server.connections(conn)
                    assert seen.in_use == server.connections(admin).in_use
        finally:
            admin.execute(f"DROP ROLE {role}")


def test_connections_near_max_connections_with_pgqueues_share(private_dsn: str) -> None:
    # max_connections 20, 3 reserved for superusers: 17 for everyone else.
    with psycopg.connect(private_dsn, autocommit=True) as conn:
        before = server.connections(conn)
        assert (before.max_connections, before.available) == (20, 17)
        assert doctor.check_connections(conn, Thresholds()).level is Level.PASS
        opened: list[Conn] = []
        try:
            for n in range(14 - before.in_use):
                name = "pgqueue" if n < 10 else "other-app"
                opened.append(psycopg.connect(private_dsn, application_name=name))
            # 14 of 17 in use (82%): past the 80% warning.
            warned = doctor.check_connections(conn, Thresholds())
            assert warned.level is Level.WARN
            assert warned.found.startswith("14 of 17 connections in use (82%")
            assert "pgqueue's: 10 (10 in this database)" in warned.found
            for _ in range(3):
                opened.append(psycopg.connect(private_dsn))
            assert doctor.check_connections(conn, Thresholds()).level is Level.FAIL
        finally:
            for other in opened:
                other.close()


def test_a_listener_stuck_in_a_transaction_fills_the_notify_queue(private_dsn: str) -> None:
    channel = _unique("doctor_channel")
    with psycopg.connect(private_dsn, autocommit=True) as conn:
        assert doctor.check_notification_queue(conn, Thresholds(notify_warn=0)).level is (
            Level.PASS
        )
        with psycopg.connect(private_dsn) as listener:
            listener.execute(f"LISTEN {channel}")
            listener.commit()
            listener.execute("SELECT 1")  # and now it sits in a transaction, reading nothing
            for _ in range(20):  # 20 x 7 kB: several of the queue's 8 kB pages
                conn.execute("SELECT pg_notify(%s, repeat('x', 7000))", (channel,))
            usage = server.notification_queue_usage(conn)
            assert usage > 0
            finding = doctor.check_notification_queue(conn, Thresholds(notify_warn=0))
            assert finding.level is Level.WARN
            assert "LISTENs and stays in a transaction" in finding.advice
            failing = doctor.check_notification_queue(conn, Thresholds(notify_fail=usage))
            assert failing.level is Level.FAIL
            # Far from the default 1%: a healthy server's queue stays near empty.
            assert doctor.check_notification_queue(conn, Thresholds()).level is Level.PASS


# -- a pooler in the way --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["transaction", "statement"])
def test_a_pgbouncer_pooling_transactions_is_detected(dsn: str, mode: str) -> None:
    bouncer = PgBouncer(dsn, pool_mode=mode)
    try:
        with psycopg.connect(bouncer.dsn, autocommit=True) as conn:
            report = doctor.run_checks(conn, lambda: psycopg.connect(bouncer.dsn, autocommit=True))
        pooling = next(f for f in report.findings if f.check == "connection pooling")
        assert pooling.level is Level.FAIL, pooling
        assert "same server process" in pooling.found
        assert "pool_mode = transaction" in pooling.found
        assert "session mode" in pooling.advice
        assert report.level is Level.FAIL
    finally:
        bouncer.stop()


def test_a_pgbouncer_in_session_mode_and_a_direct_connection_pass(dsn: str) -> None:
    bouncer = PgBouncer(dsn, pool_mode="session")
    try:
        for target in (bouncer.dsn, dsn):
            finding = doctor.check_pooling(lambda t=target: psycopg.connect(t, autocommit=True))
            assert finding.level is Level.PASS, (target, finding)
            first, second = (
                finding.data["first_connection_pids"],
                finding.data["second_connection_pids"],
            )
            assert len(set(first)) == 1 and len(set(second)) == 1 and first[0] != second[0]
    finally:
        bouncer.stop()
