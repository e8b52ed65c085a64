"""The Flask extension: a pgqueue App configured from `app.config`, and `flask pgqueue ...`.

>>> queue = PgQueue()                   # in extensions.py, beside `db = SQLAlchemy()`
>>> @queue.task
... def ship(order_id: int) -> None: ...
>>> def create_app() -> Flask:
...     app = Flask(__name__)
...     app.config["SQLALCHEMY_DATABASE_URI"] = "postgresql+psycopg://localhost/shop"
...     db.init_app(app)
...     queue.init_app(app)             # PGQUEUE_DSN, else SQLALCHEMY_DATABASE_URI
...     return app

A job enqueued with `ship.apply_async((order.id,), connection=db.session)` is written in the
session's transaction: it exists once `db.session.commit()` does, and never after a rollback.
`flask pgqueue worker` (and every other `pgqueue` command) runs on the configured database.
Needs the `pgqueue[flask]` extra; the engine never imports this module.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import click
import psycopg
from flask import Flask, current_app, has_app_context
from flask.cli import ScriptInfo, with_appcontext
from psycopg.conninfo import conninfo_to_dict

from pgqueue.app import App
from pgqueue.config import hide_password, normalize_dsn
from pgqueue.errors import ConfigurationError
from pgqueue.job import Job
from pgqueue.shared import SharedTask
from pgqueue.tasks import Task

__all__ = ["PgQueue", "dsn_from_config"]

EXTENSION_KEY = "pgqueue"
# What `flask pgqueue` gives pgqueue's own command line as its --app: an attribute of this
# module that resolves, inside the command's app context, to the extension's App.
CURRENT_APP_PATH = f"{__name__}:current_pgqueue_app"
# Where `flask pgqueue` leaves the Flask app's import path (`flask --app`) for the children of
# a process pool, which load the app again.
FLASK_APP_ENV = "PGQUEUE_FLASK_APP"
_SCHEME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.\-]*)://")


class PgQueue:
    """pgqueue for a Flask app: `PgQueue(app)`, or `PgQueue()` then `init_app(app)` in an
    application factory.

    `pgqueue_app`: an App of your own to use (its tasks, its default queue); by default the
    extension makes one. Either way `init_app` points it at the database of `app.config`:
    `PGQUEUE_DSN`, else `SQLALCHEMY_DATABASE_URI` (a PostgreSQL URL, with or without a driver
    such as `postgresql+psycopg://`). One PgQueue talks to one database at a time: calling
    `init_app` on another app (one per test, say) points it at that app's database.
    """

    def __init__(self, app: Flask | None = None, pgqueue_app: App | None = None) -> None:
        self.pgqueue_app = pgqueue_app if pgqueue_app is not None else App()
        # The app whose context jobs run in: the last one init_app was called with.
        self.flask_app: Flask | None = None
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return f"<pgqueue.contrib.flask.PgQueue tasks={len(self.pgqueue_app.tasks)}>"

    def init_app(self, app: Flask) -> None:
        """Read the DSN from `app.config` (ConfigurationError if there is none, or it is not
        PostgreSQL), register the extension in `app.extensions["pgqueue"]` and the
        `flask pgqueue` command in `app.cli`."""
        self.pgqueue_app.set_dsn(dsn_from_config(app.config))
        self.flask_app = app
        app.extensions[EXTENSION_KEY] = self
        app.cli.add_command(pgqueue_command)

    # -- what users call, delegated to the App --------------------------------------------

    def task(self, fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Register a task on the extension's App, run inside an app context: `@queue.task`
        or `@queue.task(...)` with the options of `pgqueue.App.task`.

        A worker runs each job in an app context of the Flask app `init_app` was last called
        with (unless one is active already), so that a task can use `db.session` and
        `current_app`; Flask-SQLAlchemy removes the session when the job ends.
        """
        register = self.pgqueue_app.task(**options)
        if fn is not None:
            return register(self._in_app_context(fn))
        return lambda function: register(self._in_app_context(function))

    def periodic(self, **options: Any) -> Callable[[Any], Task[Any, Any] | SharedTask[Any, Any]]:
        """`pgqueue.App.periodic` on the extension's App; a bare function becomes a task as
        with `queue.task`."""
        declare = self.pgqueue_app.periodic(**options)
        return lambda target: declare(
            target if isinstance(target, (Task, SharedTask)) else self.task(target)
        )

    def _in_app_context(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        if isinstance(fn, Task) or not callable(fn):
            return fn  # the App refuses it, saying why
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with self._app_context():
                    return await fn(*args, **kwargs)

            return run_async

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            with self._app_context():
                return fn(*args, **kwargs)

        return run

    def _app_context(self) -> contextlib.AbstractContextManager[Any]:
        if has_app_context():
            return contextlib.nullcontext()
        if self.flask_app is None:
            raise ConfigurationError(
                "a pgqueue task of a Flask app ran before init_app(app): start the worker "
                "with `flask --app yourapp pgqueue worker`"
            )
        return self.flask_app.app_context()

    def get_job(self, job_id: int) -> Job:
        """The job with this id (JobNotFound if there is none): for a job-status view."""
        return self.pgqueue_app.get_job(job_id)


def dsn_from_config(config: Mapping[str, Any]) -> str:
    """The libpq DSN a Flask config names: `PGQUEUE_DSN`, else `SQLALCHEMY_DATABASE_URI`
    converted (`postgresql+psycopg://...` -> `postgresql://...`). ConfigurationError, saying
    what to set, when neither is there or the one used is not a PostgreSQL DSN."""
    own = config.get("PGQUEUE_DSN")
    if own:
        return _checked(str(own), "PGQUEUE_DSN")
    uri = config.get("SQLALCHEMY_DATABASE_URI")
    if uri:
        # Flask-SQLAlchemy also takes a sqlalchemy.URL, whose str() hides the password.
        render = getattr(uri, "render_as_string", None)
        text = render(hide_password=False) if render is not None else str(uri)
        return _checked(text, "SQLALCHEMY_DATABASE_URI")
    raise ConfigurationError(
        "pgqueue has no database for this Flask app: set PGQUEUE_DSN (or "
        "SQLALCHEMY_DATABASE_URI) in app.config to a PostgreSQL URL before init_app()"
    )


def _checked(dsn: str, key: str) -> str:
    scheme = _SCHEME.match(dsn)
    if scheme is not None and scheme[1].split("+")[0].lower() not in ("postgresql", "postgres"):
        raise ConfigurationError(
            f"{key} is a {scheme[1].split('+')[0]!r} URL; pgqueue needs PostgreSQL: point it at "
            "PostgreSQL, or set PGQUEUE_DSN to a PostgreSQL URL"
        )
    dsn = normalize_dsn(dsn)
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        detail = hide_password(" ".join(str(exc).split()), dsn)
        raise ConfigurationError(f"{key} is not a valid PostgreSQL DSN: {detail}") from None
    return dsn


def _extension(app: Flask) -> PgQueue:
    extension = app.extensions.get(EXTENSION_KEY)
    if not isinstance(extension, PgQueue):
        raise ConfigurationError(
            "this Flask app has no pgqueue extension: call PgQueue(app) or queue.init_app(app)"
        )
    return extension


def __getattr__(name: str) -> Any:
    # `current_pgqueue_app`: the App of the Flask app whose command is running, for
    # pgqueue's own command line, which loads its App by module:attribute.
    if name == "current_pgqueue_app":
        return _current_pgqueue_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_loaded_by_path: dict[str, App] = {}


def _current_pgqueue_app() -> App:
    if has_app_context():
        return _extension(current_app).pgqueue_app
    # A child of `flask pgqueue worker --pool process`, started afresh: it loads the Flask
    # app the way the worker's `flask --app` did, from the path the worker left it.
    path = os.environ.get(FLASK_APP_ENV)
    if not path:
        raise ConfigurationError(
            f"{CURRENT_APP_PATH} only exists inside `flask --app yourapp pgqueue`; elsewhere "
            "pass --app module:attribute naming your pgqueue.App"
        )
    if path not in _loaded_by_path:
        _loaded_by_path[path] = _extension(ScriptInfo(app_import_path=path).load_app()).pgqueue_app
    return _loaded_by_path[path]


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@click.command(
    "pgqueue",
    add_help_option=False,  # `flask pgqueue --help` is pgqueue's own help
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@with_appcontext
def pgqueue_command(args: Sequence[str]) -> None:
    """Run a pgqueue command (worker, migrate, status, jobs, ...) on this app's database."""
    from pgqueue.cli import main

    _extension(current_app)  # a clear error if init_app was not called
    # pgqueue's commands load their App from --app or PGQUEUE_APP; this one names the
    # extension's (an --app given on the command line still wins).
    environment = {"PGQUEUE_APP": CURRENT_APP_PATH}
    info = click.get_current_context().find_object(ScriptInfo)
    if info is not None and info.app_import_path:
        environment[FLASK_APP_ENV] = info.app_import_path
    with _environment(**environment):
        code = main(list(args))
    click.get_current_context().exit(code)
