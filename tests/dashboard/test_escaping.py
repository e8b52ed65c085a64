"""User data is text: arguments, results, errors, tracebacks, task and schedule names that
hold HTML are shown escaped on every page that shows them; and the DSN's password is never
shown, not even when the database cannot be reached."""

from __future__ import annotations

import logging
import socket
from html import unescape
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import admin
from pgqueue.testing import drain
from tests.conftest import dsn_params
from tests.dashboard.conftest import (
    PAGES,
    MakeClient,
    TestClient,
    page_token,
    write_schedules,
)

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
PAYLOADS = (SCRIPT, IMG)
# What must never reach a page unescaped: the payloads, and the tags they would open.
RAW = (*PAYLOADS, "<script>", "<img")
ESCAPED_IMG = "&lt;img src=x onerror=alert(1)&gt;"


def assert_no_raw_payload(html: str, where: str) -> None:
    for raw in RAW:
        assert raw not in html, f"{where} shows {raw!r} unescaped"


@pytest.fixture
def hostile(app: pgqueue.App, conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Jobs whose every user-given part holds the payloads."""

    @app.task(name=f"task {SCRIPT} {IMG}", max_attempts=1)
    def hostile_task(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("fail"):
            raise RuntimeError(f"failed with {SCRIPT} and {IMG}")
        return {"echo": [SCRIPT, IMG], IMG: SCRIPT}

    @app.periodic(every=3600, name=f"schedule {SCRIPT} {IMG}")
    @app.task(name=f"periodic {SCRIPT}")
    def periodic_task() -> None: ...

    write_schedules(app, conn)
    failed = hostile_task.delay(SCRIPT, IMG, fail=True, note=IMG).id
    succeeded = hostile_task.delay(SCRIPT, **{IMG: SCRIPT}).id
    cancelled = hostile_task.delay(IMG).id
    admin.cancel(conn, [cancelled], reason=f"because {SCRIPT}")
    assert sorted(r.status for r in drain(app)) == ["failed", "succeeded"]
    return {"failed": failed, "succeeded": succeeded, "cancelled": cancelled}


def test_payloads_are_text_on_every_page(client: TestClient, hostile: dict[str, int]) -> None:
    paths = [
        *PAGES,
        "/?fragment=live",
        *(f"/jobs/{job_id}" for job_id in hostile.values()),
        *(f"/jobs/{job_id}?fragment=live" for job_id in hostile.values()),
    ]
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, path
        assert_no_raw_payload(response.text, path)


def test_the_job_page_shows_each_payload_escaped(
    client: TestClient, hostile: dict[str, int]
) -> None:
    html = client.get(f"/jobs/{hostile['failed']}").text
    escaped_script = "&lt;script&gt;alert(1)&lt;/script&gt;"
    for testid in ("args", "kwargs", "error", "traceback"):
        part = html.split(f'data-testid="{testid}">')[1].split("</")[0]
        assert ESCAPED_IMG in part, testid
    assert f"task {escaped_script}" in html  # the task's name
    result = client.get(f"/jobs/{hostile['succeeded']}").text
    assert escaped_script in result.split('data-testid="result">')[1]


def test_text_search_for_a_payload_finds_it_and_echoes_it_escaped(
    client: TestClient, hostile: dict[str, int]
) -> None:
    for payload in PAYLOADS:
        response = client.get("/jobs", params={"q": payload})
        assert response.status_code == 200
        assert f'href="/jobs/{hostile["failed"]}"' in response.text, payload
        assert_no_raw_payload(response.text, f"search for {payload!r}")
    response = client.get("/jobs", params={"task": f"task {SCRIPT} {IMG}", "queue": IMG})
    assert_no_raw_payload(response.text, "task filter")


def test_the_overview_lists_the_failure_escaped(
    client: TestClient, hostile: dict[str, int]
) -> None:
    html = client.get("/").text
    assert f'href="/jobs/{hostile["failed"]}"' in html
    assert "failed with &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert_no_raw_payload(html, "overview")


def test_payloads_in_the_query_come_back_escaped(client: TestClient) -> None:
    for path, params in (
        ("/jobs", {"status": SCRIPT}),
        ("/jobs", {"since": IMG}),
        ("/jobs", {"before": SCRIPT}),
        ("/jobs", {"done": SCRIPT, "n": IMG, "skipped": SCRIPT}),
        (f"/{SCRIPT}", {}),
    ):
        response = client.get(path, params=params)
        assert_no_raw_payload(response.text, f"{path} {params}")


def test_a_hostile_next_on_the_login_page_is_escaped(
    app: pgqueue.App, make_client: MakeClient
) -> None:
    client = make_client(app, auth=pgqueue.dashboard.Auth(token="t" * 20))
    html = client.get("/login", params={"next": f"/{IMG}{SCRIPT}"}).text
    assert 'name="next" value="/&#34;&gt;&lt;img' in html
    assert_no_raw_payload(html, "login")


def test_a_hostile_schedule_can_be_acted_on(
    client: TestClient, conn: psycopg.Connection[Any], hostile: dict[str, int]
) -> None:
    """Its name, whatever it holds, goes through the form's URL and back."""
    name = f"schedule {SCRIPT} {IMG}"
    html = client.get("/schedules").text
    assert_no_raw_payload(html, "schedules")
    response = client.post(
        _form_action(html, "disable"), data={"csrf": page_token(client, "/schedules")}
    )
    assert response.status_code == 200, response.text
    row = conn.execute("SELECT enabled FROM pgqueue_periodic WHERE name = %s", (name,)).fetchone()
    assert row == (False,)


def _form_action(html: str, action: str) -> str:
    """The URL of the form of `action` on the page, unescaped as a browser reads it."""
    for part in html.split('action="')[1:]:
        url = part.split('"')[0]
        if url.endswith(f"/{action}"):
            return unescape(url)
    raise AssertionError(f"no {action} form")


# -- the DSN's password -------------------------------------------------------------------

PASSWORD = "s3cret-pw"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_password_of_the_dsn_is_never_shown(
    dsn: str, make_client: MakeClient, hostile: dict[str, int]
) -> None:
    params = dsn_params(dsn)
    if str(params.get("host", "")).startswith("/"):
        pytest.skip("needs a server reached over TCP")
    # Trust authentication ignores the password: the dashboard works, and has it to hide.
    secret_dsn = (
        f"postgresql://{params['user']}:{PASSWORD}@{params['host']}:{params.get('port', 5432)}"
        f"/{params['dbname']}"
    )
    client = make_client(secret_dsn)
    for path in (*PAGES, f"/jobs/{hostile['failed']}", "/jobs/987654321", "/jobs?since=x"):
        response = client.get(path)
        assert response.status_code in (200, 400, 404), path
        assert PASSWORD not in response.text, path
        assert f"{params['host']}:{params.get('port', 5432)}/{params['dbname']}" in response.text


@pytest.mark.parametrize(
    "bad_dsn",
    [
        pytest.param("postgresql://postgres:{pw}@127.0.0.1:{port}/db", id="unreachable"),
        pytest.param("host=127.0.0.1 port={port} password={pw} dbname=db", id="keywords"),
        pytest.param("postgresql://postgres:{pw}@[::1", id="malformed"),
    ],
)
def test_the_password_is_hidden_when_the_database_cannot_be_reached(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture, bad_dsn: str
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(bad_dsn.format(pw=PASSWORD, port=_free_port()))
    for path in (*PAGES, "/jobs/1", "/?fragment=live"):
        response = client.get(path)
        assert response.status_code in (400, 503), path
        assert "database" in response.text.lower() or "DSN" in response.text
        assert PASSWORD not in response.text, path
    for record in caplog.records:
        assert PASSWORD not in record.getMessage()
