"""Stand-ins for the outside world: a payment gateway and a mailer.

The gateway times out on the first try of each order, as real ones sometimes do, so that the
retry path runs; the mailer writes to a table instead of sending.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import psycopg

_tries: Counter[int] = Counter()
_lock = threading.Lock()


class GatewayTimeout(Exception):
    """The payment gateway did not answer in time: try again later."""


def charge(order_id: int, amount_cents: int) -> str:
    """Charge an order; returns the gateway's receipt id."""
    with _lock:
        _tries[order_id] += 1
        first = _tries[order_id] == 1
    if first:
        raise GatewayTimeout(f"no answer for order {order_id}")
    return f"rcpt-{order_id}-{amount_cents}"


def forget_tries() -> None:
    """Start over: the next charge of every order times out again (for tests)."""
    with _lock:
        _tries.clear()


def send_email(conn: psycopg.Connection[Any], to: str, subject: str) -> None:
    conn.execute("INSERT INTO shop_emails (recipient, subject) VALUES (%s, %s)", (to, subject))
