"""The Flask extension through the example shop (examples/flask) and Flask's test client, on a
real PostgreSQL: jobs enqueued in `db.session` commit or vanish with the request's data, and a
real `flask pgqueue worker` runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from flask import Flask, current_app
from psycopg.conninfo import conninfo_to_dict

from pgqueue.contrib.flask import PgQueue, dsn_from_config
from pgqueue.errors import ConfigurationError
from tests.acceptance.helpers import WorkerProcess, subprocess_env
from tests.conftest import ROOT, wait_until

EXAMPLE = ROOT / "examples" / "flask"
if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))

from flaskshop import create_app  # noqa: E402
from flaskshop.extensions import db  # noqa: E402


def sqlalchemy_url(dsn: str) -> str:
    """The test database's libpq DSN as the SQLAlchemy URL a Flask app is configured with."""
    params = conninfo_to_dict(dsn)
    host = params.get("host")
    socket_dir = host is not None and str(host).startswith("/")
    url = sa.URL.create(
        "postgresql+psycopg",
        username=params.get("user"),
        password=params.get("password"),
        host=None if socket_dir else host,
        port=int(params["port"]) if params.get("port") else None,
        database=params.get("dbname"),
        query={"host": str(host)} if socket_dir else {},
    )
    return url.render_as_string(hide_password=False)


@pytest.fixture
def database_url(dsn: str) -> str:
    return sqlalchemy_url(dsn)


@pytest.fixture
def shop(database_url: str) -> Iterator[Flask]:
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": database_url})
    result = app.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 0, result.output
    yield app
    with app.app_context():
        db.engine.dispose()


def count(dsn: str, sql: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return int(row[0])


def test_committed_request_leaves_one_job_with_its_order(shop: Flask, dsn: str) -> None:
    response = shop.test_client().post("/orders", json={"item": "teapot", "quantity": 2})

    assert response.status_code == 201
    order_id, job_id = response.json["order_id"], response.json["job_id"]
    with psycopg.connect(dsn) as conn:
        jobs = conn.execute("SELECT id, task_name, args, status FROM pgqueue_jobs").fetchall()
        orders = conn.execute("SELECT id, item, status FROM flaskshop_orders").fetchall()
    assert jobs == [(job_id, "flaskshop.tasks.ship_order", [order_id], "queued")]
    assert orders == [(order_id, "teapot", "new")]


def test_failure_after_enqueue_rolls_back_the_order_and_its_job(shop: Flask, dsn: str) -> None:
    response = shop.test_client().post(
        "/orders", json={"item": "teapot", "quantity": 2, "card": "declined"}
    )

    assert response.status_code == 402
    assert count(dsn, "SELECT count(*) FROM pgqueue_jobs") == 0
    assert count(dsn, "SELECT count(*) FROM flaskshop_orders") == 0


def test_unhandled_error_after_enqueue_leaves_no_job(shop: Flask, dsn: str) -> None:
    # An exception the app does not handle: Flask-SQLAlchemy ends the session with the
    # request, and what it had written, the job included, is rolled back.
    from flaskshop.extensions import queue
    from flaskshop.tasks import ship_order

    @shop.post("/explode")
    def explode() -> str:
        ship_order.apply_async((1,), connection=db.session)
        raise RuntimeError("boom after enqueue")

    shop.config["PROPAGATE_EXCEPTIONS"] = False
    assert shop.test_client().post("/explode").status_code == 500
    assert count(dsn, "SELECT count(*) FROM pgqueue_jobs") == 0
    assert queue.pgqueue_app.dsn == dsn_from_config(shop.config)


def test_status_view_of_an_unknown_job_is_404(shop: Flask) -> None:
    assert shop.test_client().get("/jobs/999999").status_code == 404


class FlaskWorker(WorkerProcess):
    """`flask --app examples/flask/flaskshop pgqueue worker ...`, as a user runs it; the DSN
    comes from the app's config alone (FLASK_SQLALCHEMY_DATABASE_URI), not PGQUEUE_DSN."""

    def __init__(self, log_path: Path, args: list[str]) -> None:
        super().__init__("", log_path, args)
        self.command = [
            sys.executable, "-m", "flask", "--app", "examples/flask/flaskshop",
            "pgqueue", "worker", *args,
        ]  # fmt: skip


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_flask_pgqueue_worker_runs_the_job_and_the_status_view_shows_it(
    pool: str, shop: Flask, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With --pool process, each child process loads the Flask app again, as `--app` named it.
    client = shop.test_client()
    placed = client.post("/orders", json={"item": "kettle", "quantity": 3}).json
    assert client.get(f"/jobs/{placed['job_id']}").json["status"] == "queued"

    monkeypatch.setenv("FLASK_SQLALCHEMY_DATABASE_URI", database_url)
    options = ["--pool", pool, "--concurrency", "1", "--poll-interval", "0.5"]
    worker = FlaskWorker(tmp_path / "worker.log", options)
    try:
        worker.launch().wait_ready()

        def finished() -> dict[str, Any] | None:
            job: dict[str, Any] = client.get(f"/jobs/{placed['job_id']}").json
            return job if job["status"] in ("succeeded", "failed") else None

        job = wait_until(finished, timeout=60, what="the job to finish")
        assert job["status"] == "succeeded", worker.log()
        assert job["result"] == "shipped 3 x kettle"
        # The task used db.session in the worker: it ran in the Flask app's context.
        assert client.get(f"/orders/{placed['order_id']}").json["status"] == "shipped"
        worker.send(15)
        assert worker.wait(60) == 0, worker.log()
    finally:
        worker.cleanup()


def test_flask_pgqueue_runs_pgqueue_commands_on_the_apps_database(shop: Flask) -> None:
    shop.test_client().post("/orders", json={"item": "cup", "quantity": 1})

    result = shop.test_cli_runner().invoke(args=["pgqueue", "jobs", "list", "--json"])

    assert result.exit_code == 0, result.output
    jobs = json.loads(result.output)["jobs"]
    assert [job["task_name"] for job in jobs] == ["flaskshop.tasks.ship_order"]


def test_flask_pgqueue_unknown_job_is_one_line_on_stderr(database_url: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "examples/flask/flaskshop", "pgqueue", "jobs",
         "show", "424242"],
        cwd=ROOT, env=subprocess_env(FLASK_SQLALCHEMY_DATABASE_URI=database_url),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert completed.returncode == 1
    [line] = completed.stderr.strip().splitlines()
    assert line.startswith("pgqueue: error: no job with id 424242")


def test_sync_async_and_periodic_tasks_run_in_the_apps_context(
    dsn: str, start_worker: Callable[..., Any]
) -> None:
    app = Flask("context_check")
    app.config.update(PGQUEUE_DSN=dsn, SHOP_NAME="corner shop")
    queue = PgQueue(app)

    @queue.task
    def sync_name() -> str:
        return f"{current_app.name}: {current_app.config['SHOP_NAME']}"

    @queue.task(queue="async")
    async def async_name() -> str:
        return f"{current_app.name}: {current_app.config['SHOP_NAME']}"

    @queue.periodic(every=3600, name="hourly")
    def periodic_name() -> str:
        return current_app.name

    assert list(queue.pgqueue_app.schedules) == ["hourly"]
    jobs = [sync_name.delay(), async_name.delay(), periodic_name.delay()]
    start_worker(queue.pgqueue_app, run_scheduler=False)
    results = [job.wait(timeout=30) for job in jobs]

    assert results == ["context_check: corner shop", "context_check: corner shop", "context_check"]
    assert queue.get_job(jobs[0].id).status == "succeeded"
    queue.pgqueue_app.close()


def test_a_task_run_before_init_app_says_so() -> None:
    queue = PgQueue()

    @queue.task
    def needs_the_app() -> str:
        return current_app.name

    with pytest.raises(ConfigurationError, match=r"ran before init_app\(app\)"):
        needs_the_app()


# -- configuration ------------------------------------------------------------------------------


def test_sqlalchemy_url_with_a_driver_becomes_a_libpq_dsn() -> None:
    config = {"SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://shop:s3cret@db:5432/shop"}
    assert dsn_from_config(config) == "postgresql://shop:s3cret@db:5432/shop"


def test_sqlalchemy_url_object_keeps_its_password() -> None:
    url = sa.make_url("postgresql+psycopg://shop:s3cret@db/shop")
    assert dsn_from_config({"SQLALCHEMY_DATABASE_URI": url}) == "postgresql://shop:s3cret@db/shop"


def test_pgqueue_dsn_wins_over_the_sqlalchemy_uri() -> None:
    config = {
        "PGQUEUE_DSN": "host=queue dbname=jobs",
        "SQLALCHEMY_DATABASE_URI": "sqlite:///shop.db",
    }
    assert dsn_from_config(config) == "host=queue dbname=jobs"


def test_no_database_configured_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match=r"set PGQUEUE_DSN \(or SQLALCHEMY_DATABASE_URI"):
        PgQueue(Flask(__name__))


@pytest.mark.parametrize(
    ("key", "value", "scheme"),
    [
        ("SQLALCHEMY_DATABASE_URI", "sqlite:///shop.db", "sqlite"),
        ("SQLALCHEMY_DATABASE_URI", "mysql+pymysql://u:p@h/db", "mysql"),
        ("PGQUEUE_DSN", "redis://localhost:6379/0", "redis"),
    ],
)
def test_a_database_other_than_postgresql_is_a_clear_error(
    key: str, value: str, scheme: str
) -> None:
    app = Flask(__name__)
    app.config[key] = value
    with pytest.raises(ConfigurationError, match=f"{key} is a '{scheme}' URL; pgqueue needs Post"):
        PgQueue(app)


def test_a_malformed_dsn_is_a_clear_error_without_its_password() -> None:
    app = Flask(__name__)
    app.config["PGQUEUE_DSN"] = "host=db password=s3cret dbname"
    with pytest.raises(ConfigurationError, match="PGQUEUE_DSN is not a valid") as caught:
        PgQueue(app)
    assert "s3cret" not in str(caught.value)


def test_the_factory_refuses_a_sqlite_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLASK_SQLALCHEMY_DATABASE_URI", raising=False)
    with pytest.raises(ConfigurationError, match="'sqlite' URL"):
        create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"})


def test_import_pgqueue_does_not_import_flask() -> None:
    code = (
        "import sys, pgqueue, pgqueue.cli, pgqueue.contrib;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'flask_sqlalchemy')))"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.stdout.strip() == "[]", completed.stderr


def test_the_flask_app_path_outside_flask_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgqueue.cli import main
    from pgqueue.contrib.flask import CURRENT_APP_PATH, FLASK_APP_ENV

    monkeypatch.delenv(FLASK_APP_ENV, raising=False)
    assert main(["status", "--app", CURRENT_APP_PATH]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "only exists inside `flask --app yourapp pgqueue`" in line
