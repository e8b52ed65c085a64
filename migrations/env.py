"""Alembic environment for pgqueue's own schema.

Run through `pgqueue migrate` (or `pgqueue.migrate.upgrade()`), which passes either a live
connection (`config.attributes["connection"]`) or a URL. History is kept in
`pgqueue_alembic_version`, apart from the application's `alembic_version`.
"""

from __future__ import annotations

from alembic import context

from pgqueue.schema import VERSION_TABLE, metadata

config = context.config


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or "postgresql+psycopg://",
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "pgqueue migrations run through pgqueue.migrate, which passes a connection"
        )
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
