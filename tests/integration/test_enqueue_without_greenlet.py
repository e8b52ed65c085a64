"""Enqueueing on a sync SQLAlchemy Session where greenlet is not installed (SQLAlchemy 2.1 no
longer installs it; only its asyncio extension needs it)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import psycopg

from tests.conftest import ROOT

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["greenlet"] = None  # as if not installed: importing it raises ImportError

    import psycopg
    import sqlalchemy as sa
    from sqlalchemy.orm import Session

    import pgqueue

    app = pgqueue.App(sys.argv[1])

    @app.task
    def ship(order_id: int) -> None: ...

    class ProjectSession(Session):  # a subclass from another module, as frameworks make
        pass

    dsn = sys.argv[1]
    engine = sa.create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(dsn))
    with ProjectSession(engine) as session, session.begin():
        ship.apply_async((7,), connection=session)
    assert "sqlalchemy.ext.asyncio" not in sys.modules
    """
)


def test_sync_session_enqueue_needs_no_greenlet(dsn: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, dsn], cwd=ROOT, capture_output=True, text=True, timeout=120
    )

    assert completed.returncode == 0, completed.stderr
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT task_name, args FROM pgqueue_jobs").fetchall()
    assert rows == [("__main__.ship", [7])]
