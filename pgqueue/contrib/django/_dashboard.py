"""pgqueue's dashboard served beside a Django project, by one ASGI application.

>>> # mysite/asgi.py
>>> django_application = get_asgi_application()
>>> application = dashboard_asgi(django_application)   # /pgqueue/... is the dashboard

Requests under the mount point go to `pgqueue.dashboard.create_app`, built on the project's
App; every other request goes to Django. The dashboard comes with the `pgqueue[dashboard]`
extra, imported when `dashboard_asgi` is called, never by `pgqueue.contrib.django` itself.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from pgqueue.dashboard import Auth

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _FromEnvironment:
    def __repr__(self) -> str:
        return "FROM_ENVIRONMENT"


# The default of `auth`: the credentials the environment gives, and none is an error.
FROM_ENVIRONMENT: Any = _FromEnvironment()


def dashboard_asgi(
    django_application: ASGIApp,
    *,
    path: str = "/pgqueue",
    auth: Auth | None = FROM_ENVIRONMENT,
    read_only: bool = False,
    secret: str | None = None,
) -> ASGIApp:
    """Django's ASGI application with pgqueue's dashboard under `path`.

    `auth`: by default the credentials of the environment (`Auth.from_env()`:
    PGQUEUE_DASHBOARD_TOKEN, or PGQUEUE_DASHBOARD_USER and PGQUEUE_DASHBOARD_PASSWORD, each
    also as `..._FILE`), and without any it refuses to start, since a Django project is
    rarely served on the loopback alone. Pass `Auth(...)` to take them from elsewhere
    (settings, a vault), or `None` to leave the dashboard open behind a gate of your own.
    `secret` signs the dashboard's sessions: by default PGQUEUE_DASHBOARD_SECRET, else the
    project's SECRET_KEY, so that every process serving the project accepts the same login.
    ASGI lifespan events go to the dashboard alone (Django does not take them): a server that
    sends them, as uvicorn does, closes the dashboard's connections when it stops.
    """
    from pgqueue.dashboard import Auth, create_app  # the optional extra

    from . import app

    prefix = _mount_point(path)
    if auth is FROM_ENVIRONMENT:
        auth = Auth.from_env()
        if auth is None:
            raise ImproperlyConfigured(
                f"pgqueue's dashboard at {prefix}/ needs credentials: set "
                "PGQUEUE_DASHBOARD_TOKEN (or PGQUEUE_DASHBOARD_USER and "
                "PGQUEUE_DASHBOARD_PASSWORD), pass auth=Auth(...), or pass auth=None to leave "
                "it open behind authentication of your own"
            )
    dashboard = create_app(
        app,
        auth=auth,
        read_only=read_only,
        secret=secret or os.environ.get("PGQUEUE_DASHBOARD_SECRET") or settings.SECRET_KEY,
    )

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await dashboard(scope, receive, send)
            return
        root = str(scope.get("root_path", ""))
        full = str(scope["path"])
        # The path below the server's own root path (uvicorn --root-path), as Django reads it.
        route = full[len(root) :] if root and full.startswith(root) else full
        if route == prefix or route.startswith(prefix + "/"):
            # Mounted as a Starlette Mount would be: the full path, and the mount point
            # added to the root path, from which the dashboard builds its links.
            await dashboard({**scope, "root_path": root + prefix}, receive, send)
        else:
            await django_application(scope, receive, send)

    return application


def _mount_point(path: str) -> str:
    prefix = path.rstrip("/")
    if not prefix.startswith("/") or "?" in prefix or "#" in prefix:
        raise ImproperlyConfigured(
            f"the dashboard's path must be a URL path below the site's root, such as "
            f"'/pgqueue', not {path!r}"
        )
    return prefix
