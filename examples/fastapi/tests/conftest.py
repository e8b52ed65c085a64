"""Fixtures for the example's tests: a client of the API, its lifespan run around it, on the
database pgqueue's pytest plugin made for the test."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

# The example is the package examples.fastapi, served from the repository's root
# (`uvicorn examples.fastapi.app:api`). The root goes last on sys.path, so that an installed
# pgqueue is imported before the source tree beside the example.
ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from examples.fastapi.app import api  # noqa: E402
from pgqueue import App  # noqa: E402


@pytest.fixture
def anyio_backend() -> str:
    """The async tests run on asyncio, as uvicorn serves the API."""
    return "asyncio"


@pytest.fixture
async def client(pgqueue_app: App, anyio_backend: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the API with its lifespan entered, as a server would: the queue opened and
    its schema checked, the example's tables made. `pgqueue_app` is the example's queue,
    pointed at this test's database."""
    async with api.router.lifespan_context(api):
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
