"""Settings: which database an App uses, and what a worker accepts."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

import pgqueue
from pgqueue.config import (
    ASYNC_CONCURRENCY,
    SYNC_CONCURRENCY,
    WorkerSettings,
    default_concurrency,
    hide_password,
    parse_queues,
    resolve_dsn,
)

ARG = "postgresql://arg@host/a"
PGQUEUE = "postgresql://pgqueue@host/p"
DATABASE = "postgresql://database@host/d"


def test_the_argument_wins_over_the_environment() -> None:
    env = {"PGQUEUE_DSN": PGQUEUE, "DATABASE_URL": DATABASE}
    assert resolve_dsn(ARG, environ=env) == ARG


def test_pgqueue_dsn_wins_over_database_url() -> None:
    env = {"PGQUEUE_DSN": PGQUEUE, "DATABASE_URL": DATABASE}
    assert resolve_dsn(None, environ=env) == PGQUEUE


def test_database_url_is_the_last_resort() -> None:
    assert resolve_dsn(None, environ={"DATABASE_URL": DATABASE}) == DATABASE


def test_nothing_configured_means_the_embedded_database() -> None:
    assert resolve_dsn(None, environ={}) is None


def test_empty_values_count_as_unset() -> None:
    env = {"PGQUEUE_DSN": "", "DATABASE_URL": DATABASE}
    assert resolve_dsn("", environ=env) == DATABASE


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql+psycopg://u:p@h:5433/db", "postgresql://u:p@h:5433/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql://u@h/db"),
        ("postgres+psycopg://u@h/db", "postgresql://u@h/db"),
        ("  postgresql://u@h/db\n", "postgresql://u@h/db"),
        ("host=h dbname=db user=u", "host=h dbname=db user=u"),
    ],
)
def test_sqlalchemy_style_urls_are_normalised_for_libpq(given: str, expected: str) -> None:
    assert resolve_dsn(given, environ={}) == expected
    assert resolve_dsn(None, environ={"PGQUEUE_DSN": given}) == expected


def test_app_does_not_touch_the_database_until_asked() -> None:
    app = pgqueue.App("postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert app.dsn == "postgresql://nobody@127.0.0.1:1/none"
    assert not app.uses_embedded_database


def test_worker_settings_defaults_are_valid() -> None:
    settings = WorkerSettings()
    assert settings.concurrency is None  # chosen from the app's tasks when the worker starts
    assert settings.heartbeat_timeout > 2 * settings.heartbeat_interval


def test_worker_settings_are_frozen() -> None:
    settings = WorkerSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.concurrency = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"shutdown_timeout": -1}, "shutdown_timeout"),
        ({"heartbeat_interval": 0}, "heartbeat_interval"),
        ({"rescue_interval": 0}, "rescue_interval"),
        ({"lock_grace": 0}, "lock_grace"),
        ({"heartbeat_interval": 5.0, "heartbeat_timeout": 10.0}, "heartbeat_timeout"),
        ({"completion_batch_size": 0}, "completion_batch_size"),
        ({"completion_batch_size": 201}, "completion_batch_size"),
        ({"claim_ahead": -1}, "claim_ahead"),
        ({"claim_ahead": 101}, "claim_ahead"),
        ({"claim_ahead": 1.5}, "claim_ahead"),
        ({"claim_ahead": True}, "claim_ahead"),
        ({"queues": ("ok", "not ok")}, "queue name"),
    ],
)
def test_invalid_worker_settings_name_the_setting(options: dict[str, Any], complaint: str) -> None:
    with pytest.raises(pgqueue.ConfigurationError, match=complaint):
        WorkerSettings(**options)


def test_parse_queues_accepts_text_or_a_list() -> None:
    assert parse_queues("a, b,,c") == ("a", "b", "c")
    assert parse_queues(["x", " y "]) == ("x", "y")
    assert parse_queues(None) == ()
    with pytest.raises(pgqueue.ConfigurationError):
        parse_queues("a,b c")


# -- a DSN's password never shows in a message ------------------------------------------

# DSNs with the password "s3cret" (or "p@ss/word": characters a URL must percent-encode)
# that libpq refuses or connects with in ways whose messages quote part of the DSN.
BAD_DSNS = [
    ("postgresql://user:s3cret@[::1", "s3cret"),
    ("postgresql://user:s3cret@127.0.0.1:notaport/db", "s3cret"),
    ("postgresql://user:p@ss/word@127.0.0.1/db", "p@ss/word"),
    ("postgresql://user:s3%ZZcret@127.0.0.1/db", "s3%ZZcret"),
    ("postgresql+psycopg://user:s3cret@[::1", "s3cret"),
    ("user:s3cret@127.0.0.1/db", "s3cret"),
    ("host=127.0.0.1 password=s3cret port=abc", "s3cret"),
    ("host=127.0.0.1 password = 's3 cret' port=abc", "s3 cret"),
    ("host=127.0.0.1 password='s3cret", "s3cret"),
]


def _fragments(secret: str) -> set[str]:
    """The pieces of a secret that a message quoting a misparsed DSN could show."""
    return {piece for piece in re.split(r"[@/:% ]", secret) if len(piece) > 1} | {secret}


@pytest.mark.parametrize(("dsn", "secret"), BAD_DSNS)
def test_hide_password_leaves_no_piece_of_it_in_a_message(dsn: str, secret: str) -> None:
    message = f'invalid thing: "{dsn}", host "{secret}", \'{secret[-2:]}\' in {secret}'
    hidden = hide_password(message, dsn)
    for piece in _fragments(secret):
        assert piece not in hidden


@pytest.mark.parametrize(("dsn", "secret"), BAD_DSNS)
def test_connecting_with_a_bad_dsn_never_shows_its_password(dsn: str, secret: str) -> None:
    app = pgqueue.App(dsn)
    with pytest.raises(pgqueue.PgQueueError) as info:
        app.connect().close()
    for piece in _fragments(secret):
        assert piece not in str(info.value), str(info.value)


def test_hide_password_keeps_what_is_not_secret() -> None:
    message = 'connection to server at "127.0.0.1", port 1 failed: Connection refused'
    assert hide_password(message, "postgresql://user:s3cret@127.0.0.1:1/db") == message


CLI_COMMANDS = [
    ["migrate"],
    ["status"],
    ["workers"],
    ["queues"],
    ["jobs", "list"],
    ["jobs", "show", "1"],
    ["workflows", "show", "1"],
    ["doctor"],
    ["jobs", "cancel", "1"],
    ["jobs", "retry", "1"],
    ["jobs", "retry", "--failed"],
    ["jobs", "delete", "1"],
    ["jobs", "prune"],
    ["queues", "pause", "q"],
    ["queues", "resume", "q"],
    ["worker", "--app", "tests.integration.process_app:app"],
    ["scheduler", "--app", "tests.integration.process_app:app"],
    ["periodic", "list", "--app", "tests.integration.process_app:app"],
]


@pytest.mark.parametrize(
    "command",
    CLI_COMMANDS,
    ids=lambda c: c[0] + (c[1] if c[0] in ("periodic", "jobs", "workflows") else ""),
)
@pytest.mark.parametrize(("dsn", "secret"), BAD_DSNS)
def test_the_cli_given_a_bad_dsn_never_shows_its_password(
    command: list[str],
    dsn: str,
    secret: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from pgqueue.cli import main

    assert main([*command, "--dsn", dsn]) != 0
    captured = capsys.readouterr()
    shown = captured.out + captured.err + caplog.text
    assert "error" in shown
    for piece in _fragments(secret):
        assert piece not in shown, shown


def test_default_concurrency_is_high_only_for_apps_of_plain_async_tasks() -> None:
    app = pgqueue.App("postgresql://nobody@127.0.0.1:1/none")

    @app.task
    async def fetch() -> None: ...

    assert default_concurrency(app.tasks.values()) == ASYNC_CONCURRENCY
    # Sync tasks given to a process pool would get one child process per slot.
    assert default_concurrency(app.tasks.values(), "process") == SYNC_CONCURRENCY

    @app.task(transactional=True)
    async def record() -> None: ...

    # Each running transactional job holds a database connection.
    assert default_concurrency(app.tasks.values()) == SYNC_CONCURRENCY

    sync_app = pgqueue.App("postgresql://nobody@127.0.0.1:1/none")

    @sync_app.task
    def send() -> None: ...

    @sync_app.task
    async def notify() -> None: ...

    # A sync job runs on a thread that holds what its code holds (a connection, say).
    assert default_concurrency(sync_app.tasks.values()) == SYNC_CONCURRENCY
    assert default_concurrency([]) == SYNC_CONCURRENCY
