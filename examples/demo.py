"""`make demo`: migrate, start a worker, place orders in transactions, print the results, stop.

Uses $PGQUEUE_DSN when set, else the embedded development database under .pgqueue/.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import sqlalchemy as sa  # noqa: E402
from shop import engine, metadata, place_order  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402
from tasks import app  # noqa: E402

import pgqueue  # noqa: E402
from pgqueue import migrate  # noqa: E402


def main() -> int:
    print(f"pgqueue {pgqueue.__version__} demo")
    migrate.upgrade(app.dsn)
    db = engine()
    metadata.create_all(db)
    print("schema migrated; starting a worker")

    worker = subprocess.Popen(
        [sys.executable, "-m", "pgqueue", "worker", "--app", "tasks:app", "--concurrency", "4"],
        cwd=HERE,
        env={**os.environ, "PGQUEUE_DSN": app.dsn},
    )
    try:
        with Session(db) as session, session.begin():
            jobs = place_order(session, "teapot", 2)
            jobs += place_order(session, "kettle", 1)
        print(f"placed 2 orders and enqueued {len(jobs)} jobs in the same transaction")

        with Session(db) as session, session.begin():
            lost = place_order(session, "refunded-before-commit", 1)
            session.rollback()
        print(f"a rolled-back order left no job behind (job {lost[0].id} never existed)")

        for job in jobs:
            result = job.wait(timeout=30)
            job.refresh()
            print(
                f"  job {job.id:>4} {job.task_name:<32} {job.status.value:<9} "
                f"attempts={job.attempts}  -> {result}"
            )
        with db.connect() as connection:
            counts = connection.execute(
                sa.text("SELECT order_id, count(*) FROM demo_charges GROUP BY 1 ORDER BY 1")
            ).all()
        print("charges per order: " + ", ".join(f"order {o}: {n}" for o, n in counts))
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=60)
        db.dispose()
    print(f"worker stopped cleanly (exit code {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
