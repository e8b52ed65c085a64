"""The embedded development database: a private PostgreSQL under `.pgqueue/`, for when no DSN
is configured. Several processes (an app and its workers) share one server; it stops when the
last of them exits. Never used when a DSN is configured.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from pgqueue.errors import ConfigurationError

logger = logging.getLogger("pgqueue")

_dsn: str | None = None


def home() -> Path:
    """Where the embedded server keeps its data: `$PGQUEUE_HOME`, else `./.pgqueue`."""
    return Path(os.environ.get("PGQUEUE_HOME") or ".pgqueue").resolve()


def embedded_dsn() -> str:
    """Start (or join) the embedded server and return its DSN; logs that it did."""
    global _dsn
    if _dsn is not None:
        return _dsn
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise ConfigurationError(
            "no database configured: set PGQUEUE_DSN (or DATABASE_URL) to a PostgreSQL DSN, "
            "or `pip install 'pgqueue[embedded]'` for the embedded development database"
        ) from None
    data = home() / "data"
    data.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(data, cleanup_mode="stop")  # type: ignore[attr-defined]
    _dsn = str(server.get_uri())
    logger.warning(
        "no DSN configured (PGQUEUE_DSN, DATABASE_URL): using the embedded development "
        "PostgreSQL in %s; not for production",
        data,
    )
    return _dsn
