"""Each action does what its button says, in the database, and the page it returns to says
how many jobs it changed."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import psycopg
import pytest

import pgqueue
from tests.dashboard.conftest import (
    Jobs,
    MakeClient,
    TestClient,
    job_status,
    page_token,
    write_schedules,
)


def notice(html: str) -> str:
    match = re.search(r'<p class="notice" role="status">([^<]*)</p>', html)
    assert match is not None, "the page shows no notice"
    return unescape(match.group(1))


def paused_at(conn: psycopg.Connection[Any], queue: str) -> Any:
    row = conn.execute("SELECT paused_at FROM pgqueue_queues WHERE name = %s", (queue,)).fetchone()
    return None if row is None else row[0]


def test_retry_puts_a_failed_job_back_in_the_queue(
    client: TestClient, conn: psycopg.Connection[Any], jobs: Jobs
) -> None:
    path = f"/jobs/{jobs.failed}"
    response = client.post(f"{path}/retry", data={"csrf": page_token(client, path), "next": path})
    assert response.status_code == 200
    assert str(response.url).endswith(f"{path}?done=retry&n=1&skipped=0")
    assert notice(response.text) == "1 job(s) put back in the queue"
    assert job_status(conn, jobs.failed) == "queued"
    assert 'data-testid="status">queued<' in response.text


def test_bulk_cancel_cancels_the_chosen_queued_jobs_and_counts_the_others(
    client: TestClient, conn: psycopg.Connection[Any], jobs: Jobs
) -> None:
    response = client.post(
        "/jobs",
        data={
            "csrf": page_token(client),
            "action": "cancel",
            "ids": [str(jobs.queued), str(jobs.mail_queued), str(jobs.succeeded)],
            "next": "/jobs?status=queued",
        },
    )
    assert response.status_code == 200
    assert notice(response.text) == (
        "2 job(s) cancelled or asked to stop; 1 could not be (not found, or in the wrong state)"
    )
    assert job_status(conn, jobs.queued) == job_status(conn, jobs.mail_queued) == "cancelled"
    assert job_status(conn, jobs.succeeded) == "succeeded"
    assert job_status(conn, jobs.scheduled) == "queued"  # not chosen
    assert "status=queued" in str(response.url)  # back on the filtered list


def test_bulk_retry_and_delete(
    client: TestClient, conn: psycopg.Connection[Any], jobs: Jobs
) -> None:
    token = page_token(client)
    response = client.post(
        "/jobs",
        data={"csrf": token, "action": "retry", "ids": [jobs.failed, jobs.cancelled]},
    )
    assert notice(response.text) == "2 job(s) put back in the queue"
    assert job_status(conn, jobs.failed) == job_status(conn, jobs.cancelled) == "queued"
    response = client.post(
        "/jobs",
        data={"csrf": token, "action": "delete", "ids": [jobs.succeeded, jobs.queued]},
    )
    assert notice(response.text) == (
        "1 job(s) deleted; 1 could not be (not found, or in the wrong state)"
    )
    assert job_status(conn, jobs.succeeded) is None
    assert job_status(conn, jobs.queued) == "queued"  # not finished: never deleted


def test_delete_from_the_job_page_goes_back_to_the_list(
    client: TestClient, conn: psycopg.Connection[Any], jobs: Jobs
) -> None:
    path = f"/jobs/{jobs.succeeded}"
    response = client.post(f"{path}/delete", data={"csrf": page_token(client, path)})
    assert response.status_code == 200
    assert str(response.url).endswith("/jobs?done=delete&n=1&skipped=0")
    assert notice(response.text) == "1 job(s) deleted"
    assert job_status(conn, jobs.succeeded) is None
    assert client.get(path).status_code == 404


def test_cancel_from_the_job_page(
    client: TestClient, conn: psycopg.Connection[Any], jobs: Jobs
) -> None:
    path = f"/jobs/{jobs.scheduled}"
    response = client.post(f"{path}/cancel", data={"csrf": page_token(client, path)})
    assert notice(response.text) == "1 job(s) cancelled or asked to stop"
    assert job_status(conn, jobs.scheduled) == "cancelled"


def test_an_action_on_a_job_in_the_wrong_state_says_so(
    client: TestClient, conn: psycopg.Connection[Any], jobs: Jobs
) -> None:
    path = f"/jobs/{jobs.queued}"
    response = client.post(f"{path}/retry", data={"csrf": page_token(client, path)})
    assert notice(response.text) == (
        "0 job(s) put back in the queue; 1 could not be (not found, or in the wrong state)"
    )
    assert job_status(conn, jobs.queued) == "queued"


def test_bad_action_requests_are_refused(
    client: TestClient, conn: psycopg.Connection[Any], jobs: Jobs
) -> None:
    token = page_token(client)
    cases = [
        (
            "/jobs",
            {"action": "explode", "ids": [jobs.failed]},
            400,
            "choose retry, cancel or delete",
        ),
        ("/jobs", {"action": "retry", "ids": ["1; DROP"]}, 400, "job ids are numbers"),
        (f"/jobs/{jobs.failed}/explode", {}, 404, "no job action"),
        ("/queues/reports/explode", {}, 404, "no queue action"),
        ("/queues/not a queue!/pause", {}, 400, "invalid queue name"),
        ("/schedules/nope/run", {}, 404, "no periodic schedule named"),
        ("/schedules/nope/explode", {}, 404, "no schedule action"),
    ]
    for path, form, status, message in cases:
        response = client.post(path, data={"csrf": token, **form})
        assert response.status_code == status, path
        assert message in response.text, path
    response = client.post("/jobs", data={"csrf": token, "action": "retry"})
    assert notice(response.text) == "0 job(s) put back in the queue"
    assert job_status(conn, jobs.failed) == "failed"


def test_pause_and_resume_a_queue(
    client: TestClient, conn: psycopg.Connection[Any], jobs: Jobs
) -> None:
    token = page_token(client, "/queues")
    response = client.post("/queues/reports/pause", data={"csrf": token, "next": "/queues"})
    assert response.status_code == 200
    assert notice(response.text).startswith("queue paused")
    assert paused_at(conn, "reports") is not None
    row = conn.execute("SELECT paused_by FROM pgqueue_queues WHERE name = 'reports'").fetchone()
    assert row is not None and row[0].startswith("dashboard:anonymous@")
    assert 'action="/queues/reports/resume"' in response.text
    assert paused_at(conn, "mail") is None
    response = client.post("/queues/reports/resume", data={"csrf": token, "next": "/queues"})
    assert notice(response.text) == "queue resumed"
    assert paused_at(conn, "reports") is None
    assert 'action="/queues/reports/pause"' in response.text


@pytest.fixture
def nightly(app: pgqueue.App, conn: psycopg.Connection[Any]) -> str:
    @app.periodic(cron="*/5 * * * *")
    @app.task(queue="reports", name="reports.nightly")
    def nightly(kind: str = "full") -> str:
        return kind

    write_schedules(app, conn)
    (name,) = app.schedules
    assert "/" in name  # the default name holds the cron expression
    return name


def test_disable_and_enable_a_schedule(
    client: TestClient, conn: psycopg.Connection[Any], nightly: str
) -> None:
    def enabled() -> bool:
        row = conn.execute(
            "SELECT enabled FROM pgqueue_periodic WHERE name = %s", (nightly,)
        ).fetchone()
        assert row is not None
        return bool(row[0])

    token = page_token(client, "/schedules")
    response = client.post(f"/schedules/{nightly}/disable", data={"csrf": token})
    assert notice(response.text) == "schedule disabled"
    assert not enabled()
    assert "disabled" in response.text.split(f'data-schedule="{nightly}"')[1]
    response = client.post(f"/schedules/{nightly}/enable", data={"csrf": token})
    assert notice(response.text) == "schedule enabled"
    assert enabled()


def test_run_a_schedule_now(
    client: TestClient, conn: psycopg.Connection[Any], nightly: str
) -> None:
    html = client.get("/schedules").text
    row_html = html.split(f'data-schedule="{nightly}"')[1].split("</tr>")[0]
    assert "Run now</button>" in row_html and "disabled" not in row_html.split("Run now")[0][-80:]
    response = client.post(f"/schedules/{nightly}/run", data={"csrf": page_token(client)})
    assert notice(response.text) == "schedule's job enqueued"
    row = conn.execute(
        "SELECT j.queue, j.task_name, j.status::text FROM pgqueue_periodic AS p"
        " JOIN pgqueue_jobs AS j ON j.id = p.last_job_id WHERE p.name = %s",
        (nightly,),
    ).fetchone()
    assert row is not None
    assert row[0] == "reports" and row[1].endswith("nightly") and row[2] == "queued"


def test_run_now_needs_the_app_that_registers_the_task(
    dsn: str, make_client: MakeClient, conn: psycopg.Connection[Any], nightly: str
) -> None:
    client = make_client(dsn)  # a DSN alone: the dashboard knows no task
    html = client.get("/schedules").text
    row_html = html.split(f'data-schedule="{nightly}"')[1].split("</tr>")[0]
    assert re.search(
        r'<button type="submit" disabled title="start the dashboard with --app', row_html
    )
    response = client.post(f"/schedules/{nightly}/run", data={"csrf": page_token(client)})
    assert response.status_code == 400
    assert "does not register" in response.text
    row = conn.execute("SELECT count(*) FROM pgqueue_all_jobs").fetchone()
    assert row == (0,)
    # Enable and disable need no task.
    response = client.post(f"/schedules/{nightly}/disable", data={"csrf": page_token(client)})
    assert notice(response.text) == "schedule disabled"


def test_job_ids_in_other_digits_are_refused(
    client: TestClient, conn: psycopg.Connection[Any], jobs: Jobs
) -> None:
    response = client.post(
        "/jobs", data={"csrf": page_token(client), "action": "retry", "ids": ["²"]}
    )
    assert response.status_code == 400
    assert "job ids are numbers" in response.text


def test_a_nul_in_a_schedule_name_is_a_400(client: TestClient) -> None:
    response = client.post("/schedules/a%00b/disable", data={"csrf": page_token(client)})
    assert response.status_code == 400
    assert "NUL" in response.text
