"""The shop's tests, as a project ported from Celery writes them: run with
`PGQUEUE_TEST_DSN=postgresql://... pytest` from examples/from_celery."""

import psycopg
import pytest
from shop import orders, services, tasks

from pgqueue import migrate
from pgqueue.testing import assert_enqueued, drain, eager


@pytest.fixture(scope="session")
def pgqueue_setup_database():
    def setup(dsn):
        migrate.upgrade(dsn)
        with psycopg.connect(dsn) as conn:
            orders.create_tables(conn)

    return setup


@pytest.fixture(autouse=True)
def gateway():
    services.forget_tries()


def test_an_order_is_charged_after_one_retry_and_confirmed(pgqueue_app):
    with pgqueue_app.connect() as conn:
        job_id = orders.place_order(conn, "ada@example.com", 4200)

    ran = drain(pgqueue_app)  # runs the jobs here, through the database, retries included

    assert [(r.task_name, r.status) for r in ran] == [
        ("shop.charge_order", "queued"),  # the gateway timed out: retried
        ("shop.charge_order", "succeeded"),
        ("shop.send_confirmation", "succeeded"),
    ]
    order_id = ran[0].args[0]
    assert orders.payment_receipt(job_id) == f"rcpt-{order_id}-4200"  # Job.wait()


def test_a_rolled_back_order_enqueues_nothing(pgqueue_app):
    with pgqueue_app.connect() as conn, pytest.raises(RuntimeError), conn.transaction():
        orders.place_order(conn, "bob@example.com", 100)
        raise RuntimeError("the web request failed after placing the order")
    assert drain(pgqueue_app) == []


def test_paying_enqueues_the_confirmation(pgqueue_app):
    with pgqueue_app.connect() as conn:
        orders.place_order(conn, "eve@example.com", 900)
    drain(pgqueue_app, queues=["default"])  # the charge only; the mail queue waits
    assert_enqueued(tasks.send_confirmation, queue="mail")


def test_the_schedules(pgqueue_app):
    assert set(pgqueue_app.schedules) == {"nightly-sales", "release-stale-carts"}
    tasks.sales_report.delay(days=1)
    [ran] = drain(pgqueue_app)
    assert ran.result == {"days": 1, "orders": 0, "total_cents": 0}


def test_a_report_in_eager_mode(pgqueue_app):
    with eager(pgqueue_app):  # runs at once, in this call; no job row
        assert tasks.sales_report.delay(7).wait()["days"] == 7
