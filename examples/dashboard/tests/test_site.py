"""The site and its mounted dashboard as their users see them, on a real PostgreSQL: the
dashboard asks for its token, answers under /pgqueue/ with every link there, and shows the
job the site enqueued, before and after a worker ran it."""

from __future__ import annotations

import re

import httpx
import pytest
from conftest import TOKEN
from signups import send_welcome

from pgqueue import App
from pgqueue.testing import adrain, assert_enqueued

pytestmark = pytest.mark.anyio


async def log_in(client: httpx.AsyncClient, token: str) -> httpx.Response:
    page = await client.get("/pgqueue/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None, page.text
    return await client.post(
        "/pgqueue/login", data={"csrf": csrf[1], "token": token, "next": "/pgqueue/"}
    )


async def test_the_dashboard_asks_for_its_token(client: httpx.AsyncClient) -> None:
    page = await client.get("/pgqueue/")
    assert page.status_code == 303
    assert page.headers["location"] == "/pgqueue/login?next=/pgqueue/"
    assert (await log_in(client, "a-wrong-token-of-some-length")).status_code == 401

    logged_in = await log_in(client, TOKEN)

    assert logged_in.status_code == 303 and logged_in.headers["location"] == "/pgqueue/"
    assert (await client.get("/pgqueue/")).status_code == 200


async def test_the_overview_links_stay_under_the_mount_point(client: httpx.AsyncClient) -> None:
    await log_in(client, TOKEN)

    page = await client.get("/pgqueue/")

    assert 'data-testid="chart-depth"' in page.text
    links = re.findall(r'(?:href|action|src)="([^"]+)"', page.text)
    assert {"/pgqueue/jobs", "/pgqueue/queues", "/pgqueue/static/dashboard.js"} <= set(links)
    assert [link for link in links if not link.startswith("/pgqueue/")] == []
    assert page.headers["content-security-policy"].startswith("default-src 'none'")


async def test_a_sign_up_shows_its_job_on_the_dashboard(
    client: httpx.AsyncClient, pgqueue_app: App
) -> None:
    signed_up = await client.post("/signups", json={"address": "ada@example.com"})
    assert signed_up.status_code == 201, signed_up.text
    job_id = signed_up.json()["welcome_job"]
    assert_enqueued(send_welcome, args=["ada@example.com"])
    await log_in(client, TOKEN)

    queued = await client.get("/pgqueue/jobs?queue=emails&status=queued")
    assert f'<a href="/pgqueue/jobs/{job_id}">{job_id}</a>' in queued.text

    [ran] = await adrain(pgqueue_app)

    assert ran.status == "succeeded"
    detail = await client.get(f"/pgqueue/jobs/{job_id}")
    assert detail.status_code == 200
    assert "welcome sent to ada@example.com" in detail.text
