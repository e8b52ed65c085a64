"""pgqueue's dashboard served by the shop's ASGI entry point (djshop/asgi.py) under /pgqueue/,
beside Django's own URLs, against the test database. Driven through httpx's ASGITransport:
Django's test client reaches Django alone."""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator, MutableMapping
from typing import Any

import httpx
import psycopg
import pytest
from django.core.asgi import get_asgi_application
from django.core.exceptions import ImproperlyConfigured
from orders.models import Order
from shop_testing import PROJECT

from pgqueue.contrib.django import dashboard_asgi
from pgqueue.dashboard import Auth

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "shop-dashboard-token-for-tests"


class Browser:
    """A client of an ASGI application for sync tests, keeping its cookies between requests."""

    def __init__(self, application: Any, root_path: str = "") -> None:
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application, root_path=root_path),
            base_url="http://shop.test",
        )

    def get(self, path: str) -> httpx.Response:
        return self.loop.run_until_complete(self.client.get(path))

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.client.post(path, **kwargs))

    def log_in(self, token: str = TOKEN) -> httpx.Response:
        page = self.get("/pgqueue/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None, page.text
        return self.post(
            "/pgqueue/login", data={"csrf": csrf[1], "token": token, "next": "/pgqueue/jobs"}
        )

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


async def serve_lifespan(application: Any) -> None:
    """What an ASGI server sends when it starts and stops: the dashboard closes its
    connections (Django takes no lifespan events; the router gives them to the dashboard)."""
    events = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    answers: list[str] = []

    async def receive() -> MutableMapping[str, Any]:
        return next(events)

    async def send(message: MutableMapping[str, Any]) -> None:
        answers.append(message["type"])

    await application({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert answers == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def stop_serving(application: Any) -> None:
    asyncio.run(serve_lifespan(application))


@pytest.fixture(scope="module")
def application(django_db_setup: None) -> Iterator[Any]:
    """djshop.asgi's application, loaded once the test database exists (the dashboard reads
    pgqueue's DSN from Django's settings), with its credentials in the environment."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PGQUEUE_DASHBOARD_TOKEN", TOKEN)
        env.delenv("PGQUEUE_DASHBOARD_SECRET", raising=False)
        asgi = importlib.import_module("djshop.asgi")
    yield asgi.application
    # Before pytest-django drops the test database: the dashboard's connections closed, and
    # its depth sampler's too (closed as its thread ends).
    stop_serving(asgi.application)
    for thread in threading.enumerate():
        if thread.name == "pgqueue-dashboard-depth":
            thread.join(timeout=30)
            assert not thread.is_alive(), "the dashboard's depth sampler did not stop"


@pytest.fixture
def browser(application: Any) -> Iterator[Browser]:
    visitor = Browser(application)
    yield visitor
    visitor.close()


def dashboard_connections(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = 'pgqueue-dashboard' AND datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_the_overview_answers_under_pgqueue_with_its_links_there(browser: Browser) -> None:
    assert browser.log_in().headers["location"] == "/pgqueue/jobs"

    page = browser.get("/pgqueue/")

    assert page.status_code == 200
    assert 'data-testid="chart-ended"' in page.text
    links = re.findall(r'(?:href|action|src)="([^"]+)"', page.text)
    assert "/pgqueue/jobs" in links and "/pgqueue/static/dashboard.css" in links
    assert [link for link in links if not link.startswith("/pgqueue/")] == []
    assert browser.get("/pgqueue/static/dashboard.js").status_code == 200


def test_a_visitor_without_the_token_is_sent_to_the_login(browser: Browser) -> None:
    page = browser.get("/pgqueue/jobs")
    assert page.status_code == 303
    assert page.headers["location"] == "/pgqueue/login?next=/pgqueue/jobs"
    assert browser.log_in("not-the-token-at-all").status_code == 401
    assert browser.get("/pgqueue/jobs").status_code == 303


def test_an_order_placed_through_django_shows_its_jobs_on_the_dashboard(
    browser: Browser,
) -> None:
    placed = browser.post("/orders", json={"item": "teapot", "quantity": 2})
    assert placed.status_code == 201, placed.text
    job_id = placed.json()["job_id"]
    browser.log_in()

    jobs = browser.get("/pgqueue/jobs?task=orders.tasks.ship_order")

    assert jobs.status_code == 200
    assert f'<a href="/pgqueue/jobs/{job_id}">{job_id}</a>' in jobs.text
    detail = browser.get(f"/pgqueue/jobs/{job_id}")
    assert detail.status_code == 200
    assert "orders.tasks.ship_order" in detail.text


def test_djangos_own_urls_still_answer(browser: Browser) -> None:
    order = Order.objects.create(item="kettle", quantity=1)

    shown = browser.get(f"/orders/{order.id}")

    assert shown.status_code == 200
    assert shown.json() == {"id": order.id, "item": "kettle", "status": "placed"}
    assert browser.get("/pgqueue-not-the-dashboard").status_code == 404  # Django's 404
    assert "Content-Security-Policy" not in browser.get(f"/orders/{order.id}").headers


def test_behind_a_proxy_that_serves_the_shop_under_a_prefix(application: Any) -> None:
    # As `uvicorn --root-path /shop` passes on a request for /shop/...: the root path in
    # front of the path, both for the dashboard's links and for Django's URLs.
    order = Order.objects.create(item="cup", quantity=4)
    visitor = Browser(application, root_path="/shop")
    try:
        login = visitor.get("/shop/pgqueue/login")
        assert login.status_code == 200
        assert 'action="/shop/pgqueue/login"' in login.text
        assert visitor.get("/shop/pgqueue/").headers["location"] == (
            "/shop/pgqueue/login?next=/shop/pgqueue/"
        )
        assert visitor.get(f"/shop/orders/{order.id}").json()["item"] == "cup"
    finally:
        visitor.close()


def test_the_mount_point_without_its_slash_redirects_to_it(browser: Browser) -> None:
    page = browser.get("/pgqueue")
    assert page.status_code in (307, 308)
    assert page.headers["location"].endswith("/pgqueue/")


def test_a_login_holds_in_every_process_that_serves_the_project(browser: Browser) -> None:
    browser.log_in()
    # Another process's application: its sessions are signed with the same SECRET_KEY.
    elsewhere = dashboard_asgi(get_asgi_application(), auth=Auth(token=TOKEN))
    other = Browser(elsewhere)
    other.client.cookies = browser.client.cookies
    try:
        assert other.get("/pgqueue/queues").status_code == 200
    finally:
        other.close()
        stop_serving(elsewhere)


def test_the_servers_shutdown_closes_the_dashboards_connections(test_dsn: str) -> None:
    application = dashboard_asgi(get_asgi_application(), auth=None)
    visitor = Browser(application)
    try:
        before = dashboard_connections(test_dsn)
        assert visitor.get("/pgqueue/queues").status_code == 200  # open: auth=None
        assert dashboard_connections(test_dsn) == before + 1
    finally:
        visitor.close()
    stop_serving(application)
    assert dashboard_connections(test_dsn) == before


def test_without_credentials_it_refuses_to_start_and_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("TOKEN", "USER", "PASSWORD"):
        monkeypatch.delenv(f"PGQUEUE_DASHBOARD_{name}", raising=False)
        monkeypatch.delenv(f"PGQUEUE_DASHBOARD_{name}_FILE", raising=False)
    with pytest.raises(ImproperlyConfigured, match=r"set PGQUEUE_DASHBOARD_TOKEN.*auth=None"):
        dashboard_asgi(get_asgi_application())
    with pytest.raises(ImproperlyConfigured, match="a URL path"):
        dashboard_asgi(get_asgi_application(), path="pgqueue", auth=None)


def test_the_django_app_imports_the_dashboard_only_when_it_is_served() -> None:
    probe = (
        "import sys, django; django.setup(); import pgqueue.contrib.django; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'starlette', 'jinja2', 'uvicorn'}))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "djshop.settings"}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
