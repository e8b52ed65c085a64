"""The jobs page's filters (queue, task, statuses, text in the arguments, time range) and its
keyset pages, read from the page a browser gets; a bad filter is a 400 that says why."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import psycopg
import pytest

import pgqueue
from tests.dashboard.conftest import Jobs, TestClient

_JOB_ROW = re.compile(r'<td class="num"><a href="/jobs/(\d+)">')
_NEXT = re.compile(r'<a href="([^"]*)" rel="next">')


def listed(client: TestClient, **params: Any) -> list[int]:
    response = client.get("/jobs", params=params)
    assert response.status_code == 200, response.text
    return [int(job_id) for job_id in _JOB_ROW.findall(response.text)]


def test_filter_by_queue_and_task(client: TestClient, jobs: Jobs, app: pgqueue.App) -> None:
    assert listed(client, queue="mail") == [jobs.mail_queued]
    assert listed(client, queue="reports") == [jobs.scheduled, jobs.queued, jobs.cancelled]
    report = next(name for name in app.tasks if name.endswith("report"))
    assert listed(client, task=report, status="queued") == [jobs.scheduled, jobs.queued]
    assert listed(client, queue="nowhere") == []


def test_filter_by_several_statuses(client: TestClient, jobs: Jobs) -> None:
    assert listed(client, status=["failed", "cancelled"]) == [jobs.cancelled, jobs.failed]
    assert listed(client, status=["succeeded", "queued"]) == [
        jobs.mail_queued,
        jobs.scheduled,
        jobs.queued,
        jobs.succeeded,
    ]
    html = client.get("/jobs", params={"status": ["failed", "cancelled"]}).text
    assert 'value="failed" checked' in html and 'value="cancelled" checked' in html
    assert 'value="queued" checked' not in html


@pytest.fixture
def texts(app: pgqueue.App) -> dict[str, int]:
    @app.task
    def note(text: str, **extra: Any) -> None: ...

    values = [
        "100%",
        "1000",
        "a_b",
        "acb",
        'say "hi"',
        "it's",
        "naïve café ☃",
        "C:\\temp",
        "Ctemp",
    ]
    ids = {value: note.delay(value).id for value in values}
    ids["in kwargs"] = note.delay("-", where="deep in kwargs").id
    return ids


@pytest.mark.parametrize(
    ("search", "found"),
    [
        ("100%", ["100%"]),
        ("%", ["100%"]),
        ("a_b", ["a_b"]),
        ("_", ["a_b"]),
        ('"hi"', ['say "hi"']),
        ("SAY", ['say "hi"']),
        ("it's", ["it's"]),
        ("'", ["it's"]),
        ("café ☃", ["naïve café ☃"]),
        ("ï", ["naïve café ☃"]),
        ("C:\\temp", ["C:\\temp"]),
        ("\\", ["C:\\temp"]),
        ("deep in kwargs", ["in kwargs"]),
        ("nothing like it", []),
    ],
)
def test_filter_by_text_in_arguments(
    client: TestClient, texts: dict[str, int], search: str, found: list[str]
) -> None:
    assert sorted(listed(client, q=search)) == sorted(texts[value] for value in found)


def test_text_filter_is_kept_in_the_form(client: TestClient, texts: dict[str, int]) -> None:
    html = client.get("/jobs", params={"q": 'say "hi" ☃'}).text
    assert 'name="q" value="say &#34;hi&#34; ☃"' in html


def test_filter_by_time_range(
    client: TestClient, conn: psycopg.Connection[Any], jobs: Jobs
) -> None:
    # Two hours ago: the failed job ended, the mail job was enqueued.
    conn.execute(
        "UPDATE pgqueue_finished_jobs SET finished_at = now() - interval '2 hours',"
        " created_at = now() - interval '3 hours' WHERE id = %s",
        (jobs.failed,),
    )
    conn.execute(
        "UPDATE pgqueue_jobs SET created_at = now() - interval '2 hours' WHERE id = %s",
        (jobs.mail_queued,),
    )
    recent = listed(client, since="3600")
    assert jobs.failed not in recent and jobs.mail_queued not in recent
    assert jobs.succeeded in recent and jobs.queued in recent
    assert listed(client, until="3600") == [jobs.mail_queued, jobs.failed]
    assert listed(client, since="21600", until="3600") == [jobs.mail_queued, jobs.failed]
    assert listed(client, since="3600", until="300") == []
    assert listed(client, since="21600", until="3600", status="failed") == [jobs.failed]
    html = client.get("/jobs", params={"since": "21600", "until": "3600"}).text
    assert '<option value="21600" selected>' in html and '<option value="3600" selected>' in html


def test_pages_follow_one_another_without_gap_or_overlap(
    app: pgqueue.App, client: TestClient
) -> None:
    @app.task(queue="bulk")
    def item(n: int) -> None: ...

    @app.task(queue="other")
    def other(n: int) -> None: ...

    ids = item.delay_many([(n,) for n in range(120)])
    other.delay_many([(n,) for n in range(30)])
    seen: list[int] = []
    url = "/jobs?queue=bulk&status=queued"
    pages = 0
    while url:
        response = client.get(url)
        assert response.status_code == 200
        page = [int(job_id) for job_id in _JOB_ROW.findall(response.text)]
        assert page, url
        seen += page
        pages += 1
        match = _NEXT.search(response.text)
        url = unescape(match.group(1)) if match else ""
        if url:
            assert "queue=bulk" in url and "status=queued" in url and "before=" in url
    assert pages == 3
    assert seen == sorted(ids, reverse=True)  # newest first, each job once


def test_a_page_is_stable_while_new_jobs_arrive(app: pgqueue.App, client: TestClient) -> None:
    @app.task(queue="bulk")
    def item(n: int) -> None: ...

    ids = item.delay_many([(n,) for n in range(60)])
    first = client.get("/jobs", params={"queue": "bulk"}).text
    next_url = unescape(_NEXT.search(first).group(1))  # type: ignore[union-attr]
    item.delay_many([(n,) for n in range(10)])  # newer than every listed job
    second = [int(job_id) for job_id in _JOB_ROW.findall(client.get(next_url).text)]
    assert second == sorted(ids, reverse=True)[50:]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"status": "bogus"}, "unknown job status &#39;bogus&#39;"),
        ({"status": ["failed", "nope"]}, "unknown job status &#39;nope&#39;"),
        ({"since": "an hour"}, "since must be a number of seconds"),
        ({"until": "-5"}, "until must be a number of seconds"),
        ({"since": "0"}, "since must be more than 0 seconds"),
        ({"before": "12abc"}, "before must be a job id"),
        ({"before": "-1"}, "before must be a job id"),
    ],
)
def test_a_bad_filter_is_a_400_that_says_why(
    client: TestClient, params: dict[str, Any], message: str
) -> None:
    response = client.get("/jobs", params=params)
    assert response.status_code == 400
    assert message in response.text


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "²"}, "since must be a number of seconds"),
        ({"until": "٣"}, "until must be a number of seconds"),
        ({"before": "²"}, "before must be a job id"),
        ({"since": "99999999999999999999"}, "since must be a number of seconds, at most"),
        ({"until": "99999999999999"}, "until must be a number of seconds, at most"),
    ],
)
def test_digits_python_reads_but_int_refuses_and_huge_bounds_are_a_400(
    client: TestClient, params: dict[str, Any], message: str
) -> None:
    """Not a 500 (str.isdigit() takes '²'), nor a 503 (a time bound the database cannot
    subtract reads as database trouble)."""
    response = client.get("/jobs", params=params)
    assert response.status_code == 400
    assert message in response.text


def test_a_notice_with_odd_counts_still_renders(client: TestClient) -> None:
    for query in ("done=retry&n=²", "done=retry&skipped=٣", "done=nonsense&n=5", "done=run&n=-1"):
        response = client.get(f"/?{query}")
        assert response.status_code == 200, query


@pytest.mark.parametrize("name", ["queue", "task"])
def test_a_nul_in_a_filter_is_a_400(client: TestClient, name: str) -> None:
    """PostgreSQL refuses NUL in text: the request's fault, not database trouble (503)."""
    response = client.get("/jobs", params={name: "a\x00b"})
    assert response.status_code == 400
    assert "NUL" in response.text


def test_a_nul_in_the_text_searched_finds_nothing(client: TestClient, jobs: Jobs) -> None:
    """The text is looked for as JSON writes it (\\u0000), which PostgreSQL takes."""
    assert listed(client, q="a\x00b") == []
