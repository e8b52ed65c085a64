"""docs/from-celery.md: every pgqueue sample it shows is quoted from examples/from_celery/, and
that example works: its own tests pass as a user runs them, and a real worker runs its tasks."""

from __future__ import annotations

import importlib
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from types import ModuleType

import psycopg
import pytest

import pgqueue
from pgqueue import signals
from pgqueue.testing import using_database
from tests.conftest import ROOT, WorkerThread, wait_until

GUIDE = ROOT / "docs" / "from-celery.md"
EXAMPLE = ROOT / "examples" / "from_celery"
CODE_BLOCK = re.compile(r"^```(python|ini)\n(.*?)^```$", re.MULTILINE | re.DOTALL)

StartWorker = Callable[..., WorkerThread]


def test_every_code_sample_is_celery_or_quoted_from_the_example() -> None:
    blocks = CODE_BLOCK.findall(GUIDE.read_text())
    quoted = 0
    for _, block in blocks:
        header, _, body = block.partition("\n")
        if header.startswith("# Celery: "):
            continue
        assert header.startswith("# examples/from_celery/"), (
            f"a sample that is neither Celery's nor quoted from the example:\n{block}"
        )
        source = (ROOT / header.removeprefix("# ")).read_text()
        assert body in source, f"{header.removeprefix('# ')} no longer has:\n{body}"
        quoted += 1
    assert quoted >= 8


def test_the_examples_own_tests_pass_as_a_user_runs_them(server_dsn: str) -> None:
    env = {**os.environ, "PGQUEUE_TEST_DSN": server_dsn, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_shop.py"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 passed" in done.stdout


@pytest.fixture(scope="module")
def shop() -> Iterator[ModuleType]:
    """The example's package, imported as its worker imports it (`--app shop.tasks:app`); its
    failure reporter is disconnected again afterwards."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        for module in ("shop.monitoring", "shop.tasks", "shop.orders"):
            importlib.import_module(module)
        package = sys.modules["shop"]
        yield package
    finally:
        signals.task_failure.disconnect(sys.modules["shop.monitoring"].report)
        sys.path.remove(str(EXAMPLE))


@pytest.fixture
def shop_app(shop: ModuleType, dsn: str) -> Iterator[pgqueue.App]:
    app: pgqueue.App = shop.tasks.app
    with using_database(app, dsn):
        with psycopg.connect(dsn) as conn:
            shop.orders.create_tables(conn)
        app.set_as_current()
        yield app


def test_a_worker_runs_the_ported_tasks_and_reports_failures(
    shop: ModuleType,
    shop_app: pgqueue.App,
    start_worker: StartWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="shop.failures")
    start_worker(shop_app)
    assert set(shop_app.queues()) == {"default", "mail"}

    with shop_app.connect() as conn:
        row = conn.execute(
            "INSERT INTO shop_orders (email, total_cents, status) "
            "VALUES ('ada@example.com', 4200, 'paid') RETURNING id"
        ).fetchone()
    assert row is not None
    shop.tasks.send_confirmation.delay(row[0]).wait(timeout=30)  # the mail queue
    report = shop.tasks.sales_report.delay(days=1).wait(timeout=30)
    assert report == {"days": 1, "orders": 1, "total_cents": 4200}

    missing = shop.tasks.charge_order.delay(999)
    with pytest.raises(pgqueue.JobFailed) as info:
        shop.orders.payment_receipt(missing.id, timeout=30)
    assert info.value.exc_type == "LookupError"
    reports = wait_until(
        lambda: [r for r in caplog.records if r.name == "shop.failures"], what="the report"
    )
    assert [r.getMessage() for r in reports] == [
        f"shop.charge_order job {missing.id} failed: LookupError: order 999 does not exist"
    ]
    with shop_app.connect() as conn:
        emails = conn.execute("SELECT recipient, subject FROM shop_emails").fetchall()
    assert emails == [("ada@example.com", f"Order {row[0]} is paid")]
