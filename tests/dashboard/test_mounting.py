"""The dashboard mounted under /pgqueue in a Starlette and in a FastAPI application: every
page, link, form, script and redirect stays under the mount point."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from html import unescape
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

import pgqueue
from pgqueue.dashboard import Auth, create_app
from tests.dashboard.conftest import PAGES, Jobs, TestClient, csrf_of

_URL = re.compile(r'(?:href|action|src|data-refresh)="([^"]*)"')
TOKEN = "a-token-of-twenty-chars"


def _home(_: Any) -> PlainTextResponse:
    return PlainTextResponse("the host application")


def in_starlette(dashboard: ASGIApp) -> ASGIApp:
    return Starlette(routes=[Route("/", _home), Mount("/pgqueue", app=dashboard)])


def in_fastapi(dashboard: ASGIApp) -> ASGIApp:
    api = FastAPI()
    api.get("/")(lambda: "the host application")
    api.mount("/pgqueue", dashboard)
    return api


Host = Callable[[ASGIApp], ASGIApp]


@pytest.fixture(params=[in_starlette, in_fastapi], ids=["starlette", "fastapi"])
def host(request: pytest.FixtureRequest) -> Host:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def mounted(app: pgqueue.App, host: Host) -> Iterator[Callable[..., TestClient]]:
    """`mounted(**create_app_options)`: a client of the host application with the dashboard
    under /pgqueue. A host's lifespan does not reach a mounted app: its connections and depth
    sampler are closed here."""
    dashboards: list[Any] = []
    clients: list[TestClient] = []

    def mount(**options: Any) -> TestClient:
        dashboard = create_app(app, **options)
        dashboards.append(dashboard.inner.state.dashboard)  # type: ignore[attr-defined]
        client = TestClient(host(dashboard))
        client.__enter__()
        clients.append(client)
        return client

    yield mount
    for client in clients:
        client.__exit__(None, None, None)
    for dashboard in dashboards:
        dashboard.sampler.stop()
        dashboard.pool.close()


def urls_of(html: str) -> list[str]:
    return [unescape(url) for url in _URL.findall(html)]


def test_every_page_links_under_the_mount_point(
    mounted: Callable[..., TestClient], jobs: Jobs
) -> None:
    client = mounted()
    assert "the host application" in client.get("/").text  # the host's own route
    paths = [*PAGES, f"/jobs/{jobs.failed}", "/jobs?status=queued", "/?fragment=live"]
    for path in paths:
        response = client.get(f"/pgqueue{path}")
        assert response.status_code == 200, path
        urls = urls_of(response.text)
        assert urls or path.endswith("fragment=live"), path
        for url in urls:
            assert url.startswith("/pgqueue/") or url == "/pgqueue/", (path, url)
    page = client.get("/pgqueue/").text
    assert 'data-refresh="/pgqueue/?fragment=live"' in page
    for asset in ("dashboard.css", "dashboard.js", "favicon.svg"):
        assert f"/pgqueue/static/{asset}" in page
        assert client.get(f"/pgqueue/static/{asset}").status_code == 200


def test_the_pager_stays_under_the_mount_point(
    app: pgqueue.App, mounted: Callable[..., TestClient]
) -> None:
    @app.task
    def item(n: int) -> None: ...

    item.delay_many([(n,) for n in range(60)])
    client = mounted()
    html = client.get("/pgqueue/jobs").text
    (next_url,) = re.findall(r'<a href="([^"]*)" rel="next">', html)
    assert unescape(next_url).startswith("/pgqueue/jobs?before=")
    assert client.get(unescape(next_url)).status_code == 200


def test_an_action_returns_under_the_mount_point(
    mounted: Callable[..., TestClient], jobs: Jobs
) -> None:
    client = mounted()
    token = csrf_of(client.get("/pgqueue/queues").text)
    for next_path, expected in (
        ("/pgqueue/queues", "/pgqueue/queues?done=pause"),
        ("", "/pgqueue/queues?done=pause"),
        ("/queues", "/pgqueue/queues?done=pause"),  # outside the dashboard: refused
        ("//evil.example/pgqueue/", "/pgqueue/queues?done=pause"),
    ):
        response = client.post(
            "/pgqueue/queues/reports/pause",
            data={"csrf": token, "next": next_path},
            follow_redirects=False,
        )
        assert response.status_code == 303
        assert response.headers["location"] == expected, next_path
    path = f"/pgqueue/jobs/{jobs.failed}"
    response = client.post(f"{path}/retry", data={"csrf": token, "next": path})
    assert str(response.url).endswith(f"{path}?done=retry&n=1&skipped=0")


def test_the_session_cookie_is_scoped_to_the_mount_point(
    mounted: Callable[..., TestClient],
) -> None:
    client = mounted()
    cookie = client.get("/pgqueue/").headers["set-cookie"]
    assert "Path=/pgqueue/" in cookie


def test_a_login_stays_under_the_mount_point(
    mounted: Callable[..., TestClient], jobs: Jobs
) -> None:
    client = mounted(auth=Auth(token=TOKEN))
    response = client.get("/pgqueue/jobs?status=failed", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/pgqueue/login?next=/pgqueue/jobs%3Fstatus%3Dfailed"
    login = client.get(response.headers["location"]).text
    assert 'action="/pgqueue/login"' in login
    assert 'name="next" value="/pgqueue/jobs?status=failed"' in login
    response = client.post(
        "/pgqueue/login",
        data={"csrf": csrf_of(login), "next": "/pgqueue/jobs?status=failed", "token": TOKEN},
        follow_redirects=False,
    )
    assert response.headers["location"] == "/pgqueue/jobs?status=failed"
    html = client.get("/pgqueue/jobs?status=failed").text
    assert f'href="/pgqueue/jobs/{jobs.failed}"' in html
    response = client.post("/pgqueue/logout", data={"csrf": csrf_of(html)}, follow_redirects=False)
    assert response.headers["location"] == "/pgqueue/login"
    assert client.get("/pgqueue/", follow_redirects=False).status_code == 303
