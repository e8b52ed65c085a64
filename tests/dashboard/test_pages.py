"""Every page answers with the data it is about, and its live part alone on `?fragment=live`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgqueue
from tests.conftest import WorkerThread, wait_until
from tests.dashboard.conftest import (
    LIVE_PAGES,
    PAGES,
    Jobs,
    TestClient,
    csrf_of,
    write_schedules,
)


def test_overview_shows_queues_cards_charts_and_recent_failures(
    client: TestClient, jobs: Jobs
) -> None:
    html = client.get("/").text
    for testid in (
        "ready",
        "running",
        "chart-ended",
        "chart-depth",
        "chart-wait",
        "chart-duration",
    ):
        assert f'data-testid="{testid}"' in html
    for queue in ("mail", "reports"):  # those with jobs waiting
        assert f'data-queue="{queue}"' in html
    assert f'href="/jobs/{jobs.failed}"' in html
    assert "exploded: on purpose" in html
    assert "<svg" in html


def test_queues_page_counts_each_queue(client: TestClient, jobs: Jobs) -> None:
    html = client.get("/queues").text
    assert 'data-queue="reports"' in html and 'data-queue="mail"' in html
    assert 'action="/queues/reports/pause"' in html


def test_jobs_page_lists_jobs_of_every_status(client: TestClient, jobs: Jobs) -> None:
    response = client.get("/jobs")
    assert response.status_code == 200
    for job_id in (jobs.succeeded, jobs.failed, jobs.cancelled, jobs.queued, jobs.scheduled):
        assert f'href="/jobs/{job_id}"' in response.text
    for status in ("succeeded", "failed", "cancelled", "queued"):
        assert f'class="status {status}"' in response.text


def test_job_page_shows_arguments_error_traceback_and_attempts(
    client: TestClient, jobs: Jobs
) -> None:
    html = client.get(f"/jobs/{jobs.failed}").text
    assert 'data-testid="status">failed<' in html
    assert "on purpose" in html.split('data-testid="args"')[1].split("</pre>")[0]
    assert "ValueError: exploded: on purpose" in html
    assert 'data-testid="traceback">Traceback' in html
    assert f'action="/jobs/{jobs.failed}/retry"' in html
    succeeded = client.get(f"/jobs/{jobs.succeeded}").text
    assert 'data-testid="result">5</pre>' in succeeded


def test_workers_page_shows_a_running_worker(
    app: pgqueue.App, client: TestClient, start_worker: Callable[..., WorkerThread]
) -> None:
    worker = start_worker(app, queues=["only-this"])
    html = client.get("/workers").text
    assert f'data-worker="{worker.worker.presence.name}"' in html
    assert "only-this" in html
    worker.stop()
    past = client.get("/workers").text.split("<h2>Left lately</h2>")[1]
    assert f'<tr class="stopped"><td>{worker.worker.presence.name}</td>' in past
    assert "No worker is running" in client.get("/workers").text


def test_schedules_page_lists_a_declared_schedule(
    app: pgqueue.App, client: TestClient, conn: psycopg.Connection[Any]
) -> None:
    @app.periodic(every=3600, name="hourly-cleanup")
    @app.task
    def cleanup() -> None: ...

    write_schedules(app, conn)
    html = client.get("/schedules").text
    assert 'data-schedule="hourly-cleanup"' in html


@pytest.mark.parametrize("path", PAGES)
def test_every_page_answers_200(client: TestClient, jobs: Jobs, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<!doctype html>")


# Something each page's live part shows.
LIVE_MARKS = {
    "/": 'data-testid="chart-ended"',
    "/queues": 'data-queue="reports"',
    "/workers": "Left lately",
}


@pytest.mark.parametrize("path", LIVE_PAGES)
def test_live_fragment_is_the_live_part_alone(client: TestClient, jobs: Jobs, path: str) -> None:
    page = client.get(path).text
    assert f'data-refresh="{path}?fragment=live"' in page
    fragment = client.get(path, params={"fragment": "live"})
    assert fragment.status_code == 200
    assert "<html" not in fragment.text and "<header" not in fragment.text
    assert "<h1>" not in fragment.text and 'id="live"' not in fragment.text
    assert LIVE_MARKS[path] in fragment.text


def test_job_page_live_fragment_is_its_status_and_fields(client: TestClient, jobs: Jobs) -> None:
    path = f"/jobs/{jobs.failed}"
    assert f'data-refresh="{path}?fragment=live"' in client.get(path).text
    fragment = client.get(path, params={"fragment": "live"}).text
    assert "<html" not in fragment
    assert 'data-testid="status">failed<' in fragment


def test_unknown_job_is_a_404_page(client: TestClient) -> None:
    response = client.get("/jobs/987654321")
    assert response.status_code == 404
    assert "987654321" in response.text and "<html" in response.text


def test_the_overview_charts_fill_as_a_worker_runs_jobs(
    app: pgqueue.App, client: TestClient, start_worker: Callable[..., WorkerThread]
) -> None:
    @app.task(max_attempts=1)
    def flaky(n: int) -> int:
        if n % 3 == 0:
            raise RuntimeError(f"flaky {n}")
        return n

    flaky.delay_many([(n,) for n in range(9)])
    start_worker(app, concurrency=2)

    def charted() -> str | None:
        html = client.get("/", params={"fragment": "live"}).text
        charts = {
            name: html.split(f'data-testid="chart-{name}"')[1].split("</figure>")[0]
            for name in ("ended", "wait", "duration", "depth")
        }
        filled = (
            'class="bar series-succeeded"' in charts["ended"]
            and 'class="bar series-failed"' in charts["ended"]
            and "series-p95" in charts["wait"].split("</figcaption>")[1]
            and "series-p95" in charts["duration"].split("</figcaption>")[1]
            and "series-ready" in charts["depth"].split("</figcaption>")[1]
        )
        return html if filled else None

    html = wait_until(charted, timeout=30, interval=0.5, what="the overview's charts to fill")
    assert "flaky 0" in html  # a recent failure


def test_job_page_shows_its_workflow_and_its_schedule_of_origin(
    app: pgqueue.App, client: TestClient, conn: psycopg.Connection[Any]
) -> None:
    @app.task
    def first(n: int) -> int:
        return n + 1

    @app.task
    def second(n: int) -> int:
        return n * 2

    @app.periodic(every=3600, name="hourly-first")
    @app.task
    def ticking() -> None: ...

    workflow = pgqueue.chain(first.s(1), second.s()).apply_async()
    waiting = workflow.jobs[-1].id
    html = client.get(f"/jobs/{waiting}").text
    assert f'data-testid="workflow">{workflow.id} ' in html
    assert 'data-testid="status">waiting<' in html
    assert f'action="/jobs/{waiting}/cancel"' in html
    write_schedules(app, conn)
    token = csrf_of(client.get("/schedules").text)
    client.post("/schedules/hourly-first/run", data={"csrf": token})
    row = conn.execute(
        "SELECT last_job_id FROM pgqueue_periodic WHERE name = 'hourly-first'"
    ).fetchone()
    assert row is not None
    html = client.get(f"/jobs/{row[0]}").text
    assert '<a href="/schedules">hourly-first</a> (every 3600' in html
