"""pgqueue for Django: an app for INSTALLED_APPS, the project's App, and a Tasks backend.

>>> INSTALLED_APPS = [..., "pgqueue.contrib.django"]
>>> PGQUEUE = {}                      # optional: DSN, DATABASE, DEFAULT_QUEUE, ...

>>> # orders/tasks.py: found by the worker, as every installed app's tasks.py is
>>> from pgqueue.contrib.django import app
>>> @app.task
... def send_confirmation(order_id: int) -> None: ...

>>> with transaction.atomic():        # the job commits, or vanishes, with the order
...     order = Order.objects.create(...)
...     send_confirmation.delay(order.id)

`manage.py migrate` creates pgqueue's tables (the contrib app's migrations run pgqueue's own
alembic revisions); `manage.py pgqueue_worker` runs a worker, and `manage.py pgqueue ...` every
other `pgqueue` command. `TASKS = {"default": {"BACKEND": "pgqueue.contrib.django.PgQueueBackend"}}`
runs Django's own `@task` functions on pgqueue. `dashboard_asgi(get_asgi_application())` serves
pgqueue's dashboard under /pgqueue/ beside the project (with the `pgqueue[dashboard]` extra).
Needs the `pgqueue[django]` extra; the engine never imports this package. See docs/django.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    import django
except ImportError as exc:  # pragma: no cover - the extra is what installs it
    raise ImportError(
        "pgqueue.contrib.django needs Django 6: pip install 'pgqueue[django]' (Python 3.12+)"
    ) from exc
if django.VERSION < (6, 0):
    raise ImportError(
        f"pgqueue.contrib.django needs Django 6 or newer (its Tasks framework), found "
        f"{django.get_version()}: pip install 'pgqueue[django]' (Python 3.12+)"
    )

from ._app import DjangoApp, dsn_for
from ._dashboard import dashboard_asgi

if TYPE_CHECKING:
    from .backend import PgQueueBackend

__all__ = ["DjangoApp", "PgQueueBackend", "app", "dashboard_asgi", "dsn_for", "periodic", "task"]

# The project's App: tasks register on it, `pgqueue_worker` runs it.
app = DjangoApp()
task = app.task
periodic = app.periodic


def __getattr__(name: str) -> Any:
    # Imported on first use: django.tasks loads Django's models machinery, which an app
    # package must not import before the app registry is ready.
    if name == "PgQueueBackend":
        from .backend import PgQueueBackend

        return PgQueueBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
