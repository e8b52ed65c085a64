"""The dashboard's shared reads: the overview's and the queues' numbers are read once for every
page open at the same moment, and an action forgets them so that its page shows what it did."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import psycopg
from starlette.testclient import TestClient

from pgqueue.dashboard import create_app
from tests.integration.inspect_rows import add_job

Conn = psycopg.Connection[Any]


def test_pages_open_at_once_share_one_read_until_an_action(dsn: str) -> None:
    dash = create_app(dsn).inner.state.dashboard  # type: ignore[attr-defined]
    reads = []

    def read(conn: Conn) -> int:
        reads.append(conn.execute("SELECT 1").fetchone())
        return len(reads)

    async def ten_pages() -> list[int]:
        return list(await asyncio.gather(*(dash.shared(read) for _ in range(10))))

    assert asyncio.run(ten_pages()) == [1] * 10
    dash.forget_shared()
    assert asyncio.run(ten_pages()) == [2] * 10


def test_a_queue_paused_shows_paused_on_the_page_read_just_before(dsn: str, conn: Conn) -> None:
    add_job(conn, "t.a", queue="mail")
    with TestClient(create_app(dsn)) as client:
        page = client.get("/queues").text
        assert 'data-queue="mail"' in page and ">paused<" not in page
        match = re.search(r'name="csrf" value="([^"]+)"', page)
        assert match is not None

        client.post("/queues/mail/pause", data={"csrf": match.group(1), "next": "/queues"})

        assert ">paused<" in client.get("/queues").text
        assert ">paused<" in client.get("/").text
