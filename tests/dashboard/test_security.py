"""The dashboard's defences: CSRF on every action, GETs that change nothing, the read-only
mode, security headers on every response, session cookies, logins, and where a login may send
the browser next."""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.dashboard import Auth
from pgqueue.dashboard.security import SESSION_COOKIE, Signer
from pgqueue.errors import ConfigurationError
from tests.dashboard.conftest import (
    PAGES,
    Jobs,
    MakeClient,
    TestClient,
    database_state,
    page_token,
    write_schedules,
)

TOKEN = "a-token-of-twenty-chars"
USER, PASSWORD = "ada", "correct horse battery"
SECRET = "the-secret-that-signs-sessions"
AUTH = Auth(token=TOKEN, username=USER, password=PASSWORD)


@pytest.fixture
def scheduled(app: pgqueue.App, conn: psycopg.Connection[Any], jobs: Jobs) -> str:
    @app.periodic(every=3600, name="nightly")
    @app.task
    def nightly() -> None: ...

    write_schedules(app, conn)
    return "nightly"


def every_action(jobs: Jobs, schedule: str) -> list[tuple[str, dict[str, Any]]]:
    """Each action route with a form that would change something."""
    return [
        ("/queues/reports/pause", {}),
        ("/queues/mail/pause", {}),
        ("/jobs", {"action": "retry", "ids": [jobs.failed, jobs.cancelled]}),
        ("/jobs", {"action": "cancel", "ids": [jobs.queued, jobs.mail_queued]}),
        ("/jobs", {"action": "delete", "ids": [jobs.succeeded]}),
        (f"/jobs/{jobs.failed}/retry", {}),
        (f"/jobs/{jobs.queued}/cancel", {}),
        (f"/jobs/{jobs.succeeded}/delete", {}),
        (f"/schedules/{schedule}/disable", {}),
        (f"/schedules/{schedule}/run", {}),
    ]


# -- CSRF ----------------------------------------------------------------------------------


def test_an_action_without_a_csrf_token_is_refused_and_changes_nothing(
    client: TestClient, conn: psycopg.Connection[Any], jobs: Jobs, scheduled: str
) -> None:
    page_token(client)  # the browser has a session: only the token is missing
    before = database_state(conn)
    for path, form in every_action(jobs, scheduled):
        response = client.post(path, data=form, follow_redirects=False)
        assert response.status_code == 403, path
        assert "did not come from the dashboard" in response.text
    assert database_state(conn) == before


def test_an_action_with_a_wrong_csrf_token_is_refused_and_changes_nothing(
    client: TestClient, conn: psycopg.Connection[Any], jobs: Jobs, scheduled: str
) -> None:
    token = page_token(client)
    wrong = token[:-1] + ("0" if token[-1] != "0" else "1")
    before = database_state(conn)
    for path, form in every_action(jobs, scheduled):
        for bad in (wrong, "", "x" * 64):
            response = client.post(path, data={**form, "csrf": bad}, follow_redirects=False)
            assert response.status_code == 403, (path, bad)
    assert database_state(conn) == before


def test_a_csrf_token_of_another_session_is_refused(
    app: pgqueue.App,
    make_client: MakeClient,
    conn: psycopg.Connection[Any],
    jobs: Jobs,
    scheduled: str,
) -> None:
    victim = make_client(app, secret=SECRET)
    attacker = make_client(app, secret=SECRET)
    # The attacker's own token, sent with the victim's cookie (or with no cookie at all).
    token = page_token(attacker)
    page_token(victim)
    before = database_state(conn)
    for path, form in every_action(jobs, scheduled):
        response = victim.post(path, data={**form, "csrf": token}, follow_redirects=False)
        assert response.status_code == 403, path
    stranger = make_client(app, secret=SECRET)
    response = stranger.post("/queues/reports/pause", data={"csrf": token}, follow_redirects=False)
    assert response.status_code == 403
    assert database_state(conn) == before


def test_a_csrf_token_in_another_body_encoding_is_refused(
    client: TestClient, conn: psycopg.Connection[Any], jobs: Jobs
) -> None:
    token = page_token(client)
    before = database_state(conn)
    as_json = client.post(
        "/queues/reports/pause",
        content=json.dumps({"csrf": token}),
        headers={"content-type": "application/json"},
    )
    as_multipart = client.post(
        "/queues/reports/pause", data={"csrf": token}, files={"f": ("f.txt", b"x")}
    )
    assert as_json.status_code == as_multipart.status_code == 403
    assert database_state(conn) == before


def test_a_non_ascii_csrf_token_is_refused_not_an_error(
    client: TestClient, conn: psycopg.Connection[Any], jobs: Jobs
) -> None:
    page_token(client)
    before = database_state(conn)
    for body in ("csrf=%C3%A9", "csrf=%FF%FE", "csrf=\u2603"):
        response = client.post(
            "/queues/reports/pause",
            content=body.encode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 403, body
    assert database_state(conn) == before


def test_a_get_changes_nothing(
    client: TestClient, conn: psycopg.Connection[Any], jobs: Jobs, scheduled: str
) -> None:
    token = page_token(client)
    before = database_state(conn)
    for path, form in every_action(jobs, scheduled):
        response = client.get(path, params={**form, "csrf": token}, follow_redirects=False)
        # The action paths answer POST alone; /jobs is the listing, which only reads.
        assert response.status_code in (200, 405), path
    for path in PAGES:
        assert client.get(path, params={"action": "delete", "csrf": token}).status_code == 200
    assert database_state(conn) == before


# -- read-only ----------------------------------------------------------------------------


def test_a_read_only_dashboard_shows_no_action(
    app: pgqueue.App, make_client: MakeClient, jobs: Jobs, scheduled: str
) -> None:
    client = make_client(app, read_only=True)
    paths = [*PAGES, f"/jobs/{jobs.failed}", f"/jobs/{jobs.queued}", f"/jobs/{jobs.succeeded}"]
    for path in paths:
        html = client.get(path).text
        assert 'method="post"' not in html and 'name="csrf"' not in html, path
        assert "data-confirm" not in html and 'name="ids"' not in html, path
        assert "read-only" in html


def test_a_read_only_dashboard_refuses_every_action_even_with_a_valid_token(
    app: pgqueue.App,
    make_client: MakeClient,
    conn: psycopg.Connection[Any],
    jobs: Jobs,
    scheduled: str,
) -> None:
    writable = make_client(app, secret=SECRET)
    token = page_token(writable)
    client = make_client(app, read_only=True, secret=SECRET)
    client.cookies.set(SESSION_COOKIE, writable.cookies[SESSION_COOKIE])
    before = database_state(conn)
    for path, form in every_action(jobs, scheduled):
        response = client.post(path, data={**form, "csrf": token}, follow_redirects=False)
        assert response.status_code == 403, path
        assert "read-only" in response.text
    assert database_state(conn) == before
    # The same token and cookie act on the writable dashboard: the refusal was read-only's.
    response = writable.post("/queues/reports/pause", data={"csrf": token}, follow_redirects=False)
    assert response.status_code == 303


# -- headers and cookies ------------------------------------------------------------------


def assert_secure_headers(response: Any) -> None:
    csp = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["base-uri"] == "'none'"
    assert directives["form-action"] == "'self'"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["cache-control"] == "no-store"


def test_every_response_carries_the_security_headers(
    client: TestClient, jobs: Jobs, make_client: MakeClient
) -> None:
    token = page_token(client)
    responses = [
        *(client.get(path) for path in PAGES),
        client.get("/?fragment=live"),
        client.get(f"/jobs/{jobs.failed}?fragment=live"),
        client.get("/static/dashboard.js"),
        client.get("/static/dashboard.css"),
        client.get("/static/favicon.svg"),
        client.get("/static/missing.js"),
        client.get("/no-such-page"),
        client.get("/jobs/987654321"),
        client.get("/jobs?status=nonsense"),
        client.post("/queues/reports/pause"),
        client.get("/queues/reports/pause"),
        client.post("/queues/reports/pause", data={"csrf": token}, follow_redirects=False),
    ]
    statuses = {response.status_code for response in responses}
    assert statuses == {200, 303, 400, 403, 404, 405}
    for response in responses:
        assert_secure_headers(response)
    assert client.get("/static/dashboard.js").headers["content-type"].startswith("text/javascript")


def test_no_page_has_inline_script_or_style(client: TestClient, jobs: Jobs) -> None:
    for path in (*PAGES, f"/jobs/{jobs.failed}"):
        html = client.get(path).text
        assert re.search(r"<script(?![^>]*\bsrc=)", html) is None, path
        assert "<style" not in html and " style=" not in html, path
        assert re.search(r"\son[a-z]+=", html) is None, path


def test_the_session_cookie_is_httponly_strict_and_scoped(client: TestClient) -> None:
    cookie = client.get("/").headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    flags = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")}
    assert "httponly" in flags
    assert flags["samesite"].lower() == "samesite=strict"
    assert flags["path"] == "Path=/"
    assert "secure" not in flags  # plain http: a Secure cookie would never come back


def test_the_session_cookie_is_secure_over_https(app: pgqueue.App, make_client: MakeClient) -> None:
    client = make_client(app, client={"base_url": "https://dashboard.example"})
    cookie = client.get("/").headers["set-cookie"]
    assert "secure" in [part.strip().lower() for part in cookie.split(";")]


# -- logins -------------------------------------------------------------------------------


@pytest.fixture
def guarded(app: pgqueue.App, make_client: MakeClient) -> TestClient:
    """A dashboard that asks for the token or the user's password."""
    return make_client(app, auth=AUTH, secret=SECRET)


def log_in(client: TestClient, next_path: str = "", **credentials: str) -> Any:
    token = page_token(client, "/login")
    return client.post(
        "/login", data={"csrf": token, "next": next_path, **credentials}, follow_redirects=False
    )


def test_pages_ask_for_a_login_first(guarded: TestClient, jobs: Jobs) -> None:
    for path in (*PAGES, f"/jobs/{jobs.failed}", "/?fragment=live"):
        response = guarded.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next=")
    response = guarded.get("/jobs?status=failed", follow_redirects=False)
    assert response.headers["location"] == "/login?next=/jobs%3Fstatus%3Dfailed"
    assert "Log in" in guarded.get("/login").text


def test_wrong_credentials_are_refused_with_401(
    guarded: TestClient, conn: psycopg.Connection[Any], jobs: Jobs
) -> None:
    for credentials in (
        {"token": TOKEN[:-1]},
        {"token": ""},
        {"username": USER, "password": PASSWORD + "!"},
        {"username": "eve", "password": PASSWORD},
        {"username": USER, "password": ""},
        {"username": "", "password": "", "token": ""},
    ):
        response = log_in(guarded, **credentials)
        assert response.status_code == 401, credentials
        assert "wrong credentials" in response.text
    assert guarded.get("/", follow_redirects=False).status_code == 303
    # An action without a login is refused, even with the session's token.
    token = page_token(guarded, "/login")
    before = database_state(conn)
    response = guarded.post("/queues/reports/pause", data={"csrf": token})
    assert response.status_code == 403
    assert database_state(conn) == before


def test_a_token_logs_in_and_goes_to_next(guarded: TestClient, jobs: Jobs) -> None:
    response = log_in(guarded, next_path="/jobs?status=failed", token=TOKEN)
    assert response.status_code == 303
    assert response.headers["location"] == "/jobs?status=failed"
    html = guarded.get("/jobs?status=failed").text
    assert f'href="/jobs/{jobs.failed}"' in html
    assert "log out token" in html


def test_a_user_and_password_log_in_and_log_out(guarded: TestClient, jobs: Jobs) -> None:
    response = log_in(guarded, username=USER, password=PASSWORD)
    assert response.status_code == 303 and response.headers["location"] == "/"
    html = guarded.get("/").text
    assert f"log out {USER}" in html
    response = guarded.post("/logout", data={"csrf": page_token(guarded, "/")})
    assert response.status_code == 200 and "Log in" in response.text  # followed to /login
    assert guarded.get("/", follow_redirects=False).status_code == 303


def test_a_login_gives_a_new_session_and_csrf_token(guarded: TestClient) -> None:
    before = page_token(guarded, "/login")
    log_in(guarded, token=TOKEN)
    after = page_token(guarded, "/")
    assert after != before
    # The token of the session before the login no longer acts.
    response = guarded.post("/queues/reports/pause", data={"csrf": before})
    assert response.status_code == 403


def test_a_logout_needs_its_csrf_token(guarded: TestClient) -> None:
    log_in(guarded, token=TOKEN)
    assert guarded.post("/logout", data={}, follow_redirects=False).status_code == 403
    assert guarded.get("/", follow_redirects=False).status_code == 200


def _cookie(session: dict[str, Any], secret: str, auth: Auth = AUTH) -> str:
    return Signer(secret, auth).dumps(session)


@pytest.mark.parametrize(
    "cookie",
    [
        pytest.param(_cookie({"u": "token", "n": "nonce", "e": 4102444800}, "other"), id="forged"),
        pytest.param(
            _cookie({"u": "token", "n": "nonce", "e": int(time.time()) - 1}, SECRET), id="expired"
        ),
        pytest.param(
            base64.urlsafe_b64encode(b'{"u":"token","n":"nonce","e":4102444800}').decode()
            + "."
            + _cookie({"u": None, "n": "nonce", "e": 4102444800}, SECRET).rpartition(".")[2],
            id="tampered",
        ),
        pytest.param("garbage", id="garbage"),
        pytest.param("a.b.c", id="dots"),
        pytest.param(_cookie({"u": "token", "e": 4102444800}, SECRET), id="no-nonce"),
        pytest.param(_cookie({"u": "token", "n": "x", "e": "never"}, SECRET), id="bad-expiry"),
    ],
)
def test_a_bad_cookie_counts_as_logged_out(guarded: TestClient, cookie: str) -> None:
    guarded.cookies.set(SESSION_COOKIE, cookie)
    response = guarded.get("/", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login")


def test_a_non_ascii_cookie_counts_as_logged_out(guarded: TestClient) -> None:
    for cookie in (b"abc.\xe9", "\u2603".encode() + b"." + "\u2603".encode()):
        response = guarded.get(
            "/",
            headers=[(b"cookie", SESSION_COOKIE.encode() + b"=" + cookie)],
            follow_redirects=False,
        )
        assert response.status_code == 303, cookie
        assert response.headers["location"].startswith("/login")


def test_a_signed_cookie_of_the_same_secret_logs_in(guarded: TestClient) -> None:
    """The counterpart of the bad cookies: what the server signed is accepted."""
    cookie = _cookie({"u": "token", "n": "nonce", "e": int(time.time()) + 60}, SECRET)
    guarded.cookies.set(SESSION_COOKIE, cookie)
    assert guarded.get("/", follow_redirects=False).status_code == 200


def test_a_new_token_ends_the_sessions_of_the_old_one(
    app: pgqueue.App, make_client: MakeClient
) -> None:
    """The same signing secret (several processes share it), another token: a session
    opened with the leaked token is not one any more."""
    before = make_client(app, auth=Auth(token=TOKEN), secret=SECRET)
    log_in(before, token=TOKEN)
    assert before.get("/", follow_redirects=False).status_code == 200
    restarted = make_client(app, auth=Auth(token=TOKEN), secret=SECRET)
    rotated = make_client(app, auth=Auth(token="a-brand-new-token-here"), secret=SECRET)
    for client in (restarted, rotated):
        client.cookies.set(SESSION_COOKIE, before.cookies[SESSION_COOKIE])
    assert restarted.get("/", follow_redirects=False).status_code == 200
    response = rotated.get("/", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login")


@pytest.mark.parametrize(
    "next_path",
    [
        "//evil.example",
        "//evil.example/jobs",
        "https://evil.example",
        "https://evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "/\t/evil.example",
        "/\n/evil.example/x",
        "javascript:alert(1)",
        "http:/evil.example",
        "evil.example",
    ],
)
def test_next_never_leaves_the_dashboard(guarded: TestClient, next_path: str) -> None:
    response = log_in(guarded, next_path=next_path, token=TOKEN)
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/") and not location.startswith("//"), location
    assert "evil" not in location and "\\" not in location, location


# -- Auth's configuration -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"token": "short"}, "at least 16 characters"),
        ({"username": "ada", "password": "short"}, "at least 8 characters"),
        ({"username": "ada"}, "both a user and a password"),
        ({"password": PASSWORD}, "both a user and a password"),
        ({}, "needs a token or a user and a password"),
    ],
)
def test_auth_refuses_weak_or_half_configurations(options: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Auth(**options)


def test_auth_checks_each_secret() -> None:
    auth = Auth(token=TOKEN, username=USER, password=PASSWORD)
    assert auth.check("", "", TOKEN) == "token"
    assert auth.check(USER, PASSWORD, "") == USER
    assert auth.check(USER, "", "") is None
    assert auth.check("", PASSWORD, "") is None
    assert Auth(token=TOKEN).check("", "", "") is None
    assert Auth(username=USER, password=PASSWORD).check("", "", "") is None


def test_auth_from_env_reads_variables_and_files(tmp_path: Any) -> None:
    assert Auth.from_env({}) is None
    assert Auth.from_env({"PGQUEUE_DASHBOARD_TOKEN": TOKEN}) == Auth(token=TOKEN)
    env = {"PGQUEUE_DASHBOARD_USER": USER, "PGQUEUE_DASHBOARD_PASSWORD": PASSWORD}
    assert Auth.from_env(env) == Auth(username=USER, password=PASSWORD)
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\nsecond line ignored\n")
    password_file = tmp_path / "password"
    password_file.write_text(f"  {PASSWORD}  \n")
    assert Auth.from_env(
        {
            "PGQUEUE_DASHBOARD_TOKEN_FILE": str(token_file),
            "PGQUEUE_DASHBOARD_USER": USER,
            "PGQUEUE_DASHBOARD_PASSWORD_FILE": str(password_file),
        }
    ) == Auth(token=TOKEN, username=USER, password=PASSWORD)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PGQUEUE_DASHBOARD_TOKEN": "short"}, "at least 16"),
        ({"PGQUEUE_DASHBOARD_USER": USER}, "both a user and a password"),
        ({"PGQUEUE_DASHBOARD_TOKEN_FILE": "/nonexistent/token"}, "cannot read it"),
        (
            {"PGQUEUE_DASHBOARD_TOKEN": TOKEN, "PGQUEUE_DASHBOARD_TOKEN_FILE": "/x"},
            "not both",
        ),
    ],
)
def test_auth_from_env_refuses_bad_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Auth.from_env(env)


def test_auth_from_env_refuses_an_empty_file(tmp_path: Any) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigurationError, match="is empty"):
        Auth.from_env({"PGQUEUE_DASHBOARD_PASSWORD_FILE": str(empty)})


def test_failed_logins_are_throttled_per_client_and_logged(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    from starlette.testclient import TestClient

    from pgqueue.dashboard import Auth, create_app

    dashboard = create_app(dsn, auth=Auth(token="a-token-of-sixteen-chars"))
    dashboard.dashboard.throttle.attempts = 3
    with TestClient(dashboard) as client:
        page = client.get("/login")
        csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
        for _ in range(3):
            wrong = client.post("/login", data={"csrf": csrf, "token": "nope"})
            assert wrong.status_code == 401
        # Even the right token is refused now, from this client, until the window passes.
        blocked = client.post("/login", data={"csrf": csrf, "token": "a-token-of-sixteen-chars"})
        assert blocked.status_code == 429
        assert "too many failed logins" in blocked.text
    assert any("dashboard login failed from" in r.getMessage() for r in caplog.records)
    dashboard.close()
