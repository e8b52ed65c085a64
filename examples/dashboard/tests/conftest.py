"""Fixtures of the example's tests: the site built on the database pgqueue's pytest plugin
made for the test, with a dashboard token in the environment, and a client of it."""

from __future__ import annotations

from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import pytest
from signups import create_site
from starlette.routing import Mount

from pgqueue import App

TOKEN = "signups-dashboard-token-for-tests"


@pytest.fixture
def anyio_backend() -> str:
    """The async tests run on asyncio, as uvicorn serves the site."""
    return "asyncio"


async def shut_down(dashboard: Any) -> None:
    """The lifespan events a server would send the dashboard if it were served alone: a
    mounted application's lifespan is its host's, so the test closes its connections itself
    before the test's database is dropped."""
    events = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> MutableMapping[str, Any]:
        return next(events)

    async def send(message: MutableMapping[str, Any]) -> None:
        assert not message["type"].endswith(".failed"), message

    await dashboard({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)


@pytest.fixture
async def client(
    pgqueue_app: App, anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("PGQUEUE_DASHBOARD_TOKEN", TOKEN)
    site = create_site(pgqueue_app)
    transport = httpx.ASGITransport(app=site)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://signups.test") as c:
            yield c
    finally:
        await shut_down(next(r.app for r in site.routes if isinstance(r, Mount)))
