"""Whether a transaction-pooling proxy sits between pgqueue and the server: two connections
asked, by turns, for their server process (`pgqueue doctor` and every worker's start ask).

Apart from pgqueue.inspect.server, which re-exports it, so that a worker's start imports this
and not the rest of the health checks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class PoolingProbe:
    """What two connections of one client saw of the server processes behind them.

    Connected straight to PostgreSQL, or through a pooler in session mode, each connection
    has one server process of its own for its whole life. Behind a pooler in transaction (or
    statement) mode, the server process changes between transactions, and two connections
    open at once take turns on the same one. `per_transaction` is True when either was seen.
    """

    first_pids: tuple[int, ...]
    second_pids: tuple[int, ...]

    @property
    def shared_pids(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.first_pids) & set(self.second_pids)))

    @property
    def per_transaction(self) -> bool:
        return bool(
            self.shared_pids or len(set(self.first_pids)) > 1 or len(set(self.second_pids)) > 1
        )


def probe_pooling(connect: Callable[[], Conn], rounds: int = 3) -> PoolingProbe:
    """Open two autocommit connections with `connect` and ask each, by turns, for its server
    process id, `rounds` times; see PoolingProbe.

    A transaction pooler hands the server connection a client just released to the next
    client that asks (PgBouncer reuses the most recently used one first), so the second
    connection's first question already lands on the first one's server process.
    """
    first: list[int] = []
    second: list[int] = []
    with contextlib.ExitStack() as stack:
        conns = [stack.enter_context(connect()) for _ in range(2)]
        for conn in conns:
            conn.prepare_threshold = None  # a pooler may not carry prepared statements
        for _ in range(rounds):
            for conn, seen in zip(conns, (first, second), strict=True):
                row = conn.execute("SELECT pg_backend_pid()").fetchone()
                assert row is not None
                seen.append(int(row[0]))
    return PoolingProbe(tuple(first), tuple(second))
