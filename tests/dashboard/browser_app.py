"""The app behind the dashboard's browser tests: its workers run these tasks, and the dashboard
is started with `--app tests.dashboard.browser_app:app` so that it may run schedules now.

The tasks look like an application's (they also fill the screenshots of the docs):
`send_email` and `resize_image` succeed, `charge_card` always fails (after a retry),
`sync_inventory` fails its first run and succeeds when retried, `import_catalog` runs long,
`export_csv` has a queue of its own for the pause test, `echo` and `reject` carry hostile
text into results, errors and tracebacks. The DSN comes from PGQUEUE_DSN, set per process by
the tests.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

import pgqueue

app = pgqueue.App()

# Every run of sync_inventory, so that it knows whether it ran before.
TABLES_DDL = "CREATE TABLE IF NOT EXISTS browser_runs (job_id bigint NOT NULL)"


class PaymentDeclined(Exception):
    """The bank said no: what charge_card always meets."""


# Errors show their type with its module: read as an application's own in the screenshots.
PaymentDeclined.__module__ = "billing"


def _conn() -> psycopg.Connection[Any]:
    return app.connect(autocommit=True)


@app.task(queue="emails", name="send_email")
def send_email(to: str, subject: str) -> str:
    return f"sent {subject!r} to {to}"


@app.task(queue="images", name="resize_image")
def resize_image(path: str, width: int) -> dict[str, Any]:
    time.sleep(0.05 + (width % 7) / 100)  # the job's work, of varied length for the charts
    return {"path": path.replace(".jpg", f"-{width}.jpg"), "width": width}


@app.task(
    queue="payments",
    name="charge_card",
    max_attempts=2,
    retry_backoff=0.1,
    retry_jitter=False,
    autoretry_for=(PaymentDeclined,),
)
def charge_card(order_id: int, amount: str) -> None:
    _check_order(order_id)
    raise PaymentDeclined(f"card declined for order {order_id} ({amount}): insufficient funds")


def _check_order(order_id: int) -> None:
    """A frame of the application's own in the traceback."""
    if order_id <= 0:
        raise ValueError("no such order")


@app.task(name="sync_inventory", max_attempts=1)
def sync_inventory(store: str) -> str:
    """Fails the first time it runs (no retry of its own); an operator's retry succeeds."""
    job = pgqueue.current_job()
    assert job is not None
    with _conn() as conn:
        conn.execute("INSERT INTO browser_runs (job_id) VALUES (%s)", (job.id,))
        row = conn.execute(
            "SELECT count(*) FROM browser_runs WHERE job_id = %s", (job.id,)
        ).fetchone()
    if row is None or row[0] < 2:
        raise ConnectionError(f"inventory service of {store} timed out")
    return f"{store}: inventory in sync"


@app.task(name="import_catalog")
def import_catalog(supplier: str, seconds: float) -> str:
    """A long job: what the workers page shows running in the screenshots."""
    time.sleep(seconds)  # the job's work
    return f"{supplier}: catalog imported"


@app.task(queue="exports", name="export_csv")
def export_csv(report: str) -> str:
    return f"{report}.csv written"


@app.periodic(cron="0 3 * * *", tz="Europe/Paris", name="nightly-report")
@app.task(queue="reports", name="nightly_report")
def nightly_report() -> str:
    return "report mailed"


@app.periodic(every=300, name="refresh-cache")
@app.task(name="refresh_cache")
def refresh_cache() -> int:
    return 42


@app.task(name="echo")
def echo(text: str) -> str:
    return text


@app.task(name="reject", max_attempts=1)
def reject(text: str) -> None:
    raise ValueError(text)
