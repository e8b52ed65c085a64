"""pgqueue's web dashboard: an ASGI application (Starlette, Jinja2, server-drawn SVG charts and
a few lines of its own JavaScript), served by `pgqueue dashboard` or mounted in an application.

>>> from pgqueue.dashboard import Auth, create_app
>>> api.mount("/pgqueue", create_app(queue, auth=Auth(token=os.environ["DASHBOARD_TOKEN"])))

It reads through the same queries as the CLI (`pgqueue.inspect`) and acts through the same
statements (`pgqueue.admin`, `pgqueue.periodic`), so the two never disagree. See
docs/dashboard.md; installed by `pgqueue[dashboard]`.
"""

from __future__ import annotations

try:
    import jinja2  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "pgqueue.dashboard needs Starlette and Jinja2: pip install 'pgqueue[dashboard]'"
    ) from exc

from pgqueue.dashboard.app import create_app
from pgqueue.dashboard.security import Auth

__all__ = ["Auth", "create_app"]
