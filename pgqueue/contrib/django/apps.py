"""The Django app: settings checked at start-up, and every installed app's tasks.py imported."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import autodiscover_modules


class PgQueueConfig(AppConfig):
    name = "pgqueue.contrib.django"
    label = "pgqueue"
    verbose_name = "pgqueue"

    def ready(self) -> None:
        from ._app import pgqueue_settings

        pgqueue_settings()  # a misspelt key fails at start-up, not at the first enqueue
        # Each app's tasks.py declares its tasks: a worker knows them all before it claims.
        autodiscover_modules("tasks")
        checks.register(check_database)  # with `manage.py check`, not only with --database


def check_database(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """`manage.py check`: pgqueue's database is PostgreSQL and can be named."""
    from ._app import database_alias, dsn_for, pgqueue_settings

    try:
        if not pgqueue_settings().get("DSN"):
            from django.db import connections

            dsn_for(connections[database_alias()].settings_dict)
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="pgqueue.E002")]
    return []
