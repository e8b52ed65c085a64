"""The App of a Django project: configured from `settings`, enqueueing in Django's transaction."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections, connections
from psycopg import pq
from psycopg.conninfo import make_conninfo

from pgqueue.app import App
from pgqueue.config import DEFAULT_QUEUE, normalize_dsn
from pgqueue.tasks import Task

SETTING = "PGQUEUE"
# The keys of settings.PGQUEUE, with what each means (checked: a misspelt key is an error).
KNOWN_KEYS = {
    "DSN": "the database's libpq DSN or URL; by default the one of DATABASES[DATABASE]",
    "DATABASE": "the alias in DATABASES whose database holds pgqueue's tables ('default')",
    "LISTEN_DSN": "where workers keep LISTEN and their lock, when DSN goes through a pooler",
    "TRANSACTION_POOLING": "True when DSN goes through a pooler in transaction mode",
    "DEFAULT_QUEUE": "the queue of tasks declared without queue= ('default')",
}
# The connection parameters of DATABASES[...]["OPTIONS"] that Django keeps for itself.
_DJANGO_ONLY_OPTIONS = ("assume_role", "isolation_level", "pool", "server_side_binding")


def pgqueue_settings() -> Mapping[str, Any]:
    """`settings.PGQUEUE` (empty when unset), checked for unknown keys."""
    values = getattr(settings, SETTING, None) or {}
    if not isinstance(values, Mapping):
        raise ImproperlyConfigured(
            f"settings.{SETTING} must be a dict, got {type(values).__name__}"
        )
    unknown = sorted(set(values) - set(KNOWN_KEYS))
    if unknown:
        known = ", ".join(sorted(KNOWN_KEYS))
        raise ImproperlyConfigured(
            f"settings.{SETTING} has unknown key(s) {', '.join(map(repr, unknown))}; "
            f"the keys are {known}"
        )
    return values


def database_alias() -> str:
    alias = pgqueue_settings().get("DATABASE", "default")
    if alias not in settings.DATABASES:
        raise ImproperlyConfigured(
            f"settings.{SETTING}['DATABASE'] is {alias!r}, which settings.DATABASES does not "
            f"define (it defines {', '.join(map(repr, settings.DATABASES))})"
        )
    return str(alias)


def dsn_for(settings_dict: Mapping[str, Any]) -> str:
    """The libpq DSN of one entry of settings.DATABASES (a PostgreSQL one)."""
    engine = str(settings_dict.get("ENGINE", ""))
    if "postgresql" not in engine and "postgis" not in engine:
        raise ImproperlyConfigured(
            f"pgqueue needs PostgreSQL, and this database's ENGINE is {engine!r}: point "
            f"settings.{SETTING}['DATABASE'] at a PostgreSQL alias, or set "
            f"settings.{SETTING}['DSN']"
        )
    libpq_keys = {d.keyword.decode() for d in pq.Conninfo.get_defaults()}
    params: dict[str, Any] = {}
    for key, value in (settings_dict.get("OPTIONS") or {}).items():
        if key in libpq_keys and key not in _DJANGO_ONLY_OPTIONS and value is not None:
            params[key] = value
    for setting, key in (
        ("NAME", "dbname"),
        ("USER", "user"),
        ("PASSWORD", "password"),
        ("HOST", "host"),
        ("PORT", "port"),
    ):
        if settings_dict.get(setting):
            params[key] = settings_dict[setting]
    return make_conninfo("", **params)


class DjangoApp(App):
    """The App of a Django project (`pgqueue.contrib.django.app`).

    Its database is `settings.PGQUEUE["DSN"]`, else the database of
    `DATABASES[settings.PGQUEUE.get("DATABASE", "default")]`, read when first needed (and
    again when Django's settings for it change, as a test runner's test database does).
    A job enqueued without `connection=` inside `transaction.atomic()` on that database is
    written on Django's own connection, in the atomic block's transaction.
    """

    def __init__(self) -> None:
        super().__init__()
        self._default_queue: str | None = None
        self._dsn_key: tuple[Any, ...] | None = None

    def __repr__(self) -> str:
        return f"<pgqueue.contrib.django.app tasks={len(self.tasks)}>"

    # -- settings, read from Django's -----------------------------------------------------

    @property
    def default_queue(self) -> str:
        if self._default_queue is not None:
            return self._default_queue
        if not settings.configured:
            return DEFAULT_QUEUE
        return str(pgqueue_settings().get("DEFAULT_QUEUE") or DEFAULT_QUEUE)

    @default_queue.setter
    def default_queue(self, value: str) -> None:
        # App.__init__ sets the default; only a value set later overrides the setting.
        self._default_queue = value if value != DEFAULT_QUEUE else None

    @property
    def dsn(self) -> str:
        if self._dsn_argument is not None:
            if self._dsn is None:
                self._dsn = normalize_dsn(self._dsn_argument)
            return self._dsn
        own = pgqueue_settings().get("DSN")
        alias = database_alias()
        settings_dict = connections[alias].settings_dict
        key = (own, alias, *(settings_dict.get(k) for k in ("NAME", "HOST", "PORT", "USER")))
        if self._dsn is None or key != self._dsn_key:
            if self._dsn is not None:
                self.close()  # the connections of the database it no longer names
            self._dsn = normalize_dsn(str(own)) if own else dsn_for(settings_dict)
            self._dsn_key = key
        return self._dsn

    @property
    def listen_dsn(self) -> str:
        own = self._listen_dsn_argument or pgqueue_settings().get("LISTEN_DSN")
        return normalize_dsn(str(own)) if own else super().listen_dsn

    @property
    def transaction_pooling(self) -> bool:
        own = pgqueue_settings().get("TRANSACTION_POOLING")
        if self._transaction_pooling_argument is None and own is not None:
            return bool(own)
        return super().transaction_pooling

    @property
    def uses_embedded_database(self) -> bool:
        return False

    def queues(self) -> tuple[str, ...]:
        """The queues of the tasks and the default queue, plus every queue that a
        `PgQueueBackend` in settings.TASKS lists: what a worker serves by default."""
        names = set(super().queues())
        for params in (getattr(settings, "TASKS", None) or {}).values():
            if str(params.get("BACKEND", "")).startswith(__package__ or ""):
                names.update(params.get("QUEUES") or ["default"])
        return tuple(sorted(names))

    # -- enqueue in Django's transaction --------------------------------------------------

    def _caller_transaction(self) -> Any:
        """Django's connection inside `transaction.atomic()` on pgqueue's database alias."""
        if self._dsn_argument is not None or pgqueue_settings().get("DSN"):
            return None  # pgqueue's database is not (known to be) Django's
        connection = connections[database_alias()]
        if not connection.in_atomic_block:
            return None
        # As Django's own cursors do: no statement after an error inside the block.
        connection.validate_no_broken_transaction()
        connection.ensure_connection()
        return connection.connection

    # -- tasks ----------------------------------------------------------------------------

    def task(self, fn: Any = None, /, **options: Any) -> Any:
        """`pgqueue.App.task`, with each run of a sync task between two
        `django.db.close_old_connections()` calls, as Django does around a request: a worker
        thread never keeps a connection past CONN_MAX_AGE, nor one that broke."""
        register = super().task(**options)
        if fn is not None:
            return register(_closing_connections(fn))
        return lambda function: register(_closing_connections(function))


def _closing_connections(fn: Callable[..., Any]) -> Callable[..., Any]:
    if isinstance(fn, Task) or not callable(fn) or inspect.iscoroutinefunction(fn):
        return fn  # the App refuses the first two, saying why; async tasks run on the loop

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        _close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            _close_old_connections()

    return run


def _close_old_connections() -> None:
    # Not inside an atomic block of this thread (a test's, when pgqueue.testing.drain() or
    # eager() runs the task in the test's own thread): closing would end its transaction.
    if not any(c.in_atomic_block for c in connections.all(initialized_only=True)):
        close_old_connections()
