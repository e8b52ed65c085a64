"""A migration operation that runs pgqueue's own alembic revisions: `manage.py migrate` and
`pgqueue migrate` apply the very same schema changes, and never drift apart."""

from __future__ import annotations

from typing import Any

import psycopg
from django.db import migrations

from pgqueue.revisions import REVISIONS, current_revision


class AlembicRevision(migrations.operations.base.Operation):
    """Upgrade pgqueue's schema to `revision` (down to `previous` when unapplied), on the
    database of pgqueue's alias only (`settings.PGQUEUE["DATABASE"]`, default "default")."""

    reduces_to_sql = False
    reversible = True
    atomic = False

    def __init__(self, revision: str, previous: str) -> None:
        self.revision = revision
        self.previous = previous

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return (self.__class__.__name__, [self.revision, self.previous], {})

    def state_forwards(self, app_label: str, state: Any) -> None:
        pass  # no Django model: the tables are pgqueue's own

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        self._migrate(schema_editor, self.revision, downgrade=False)

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        self._migrate(schema_editor, self.previous, downgrade=True)

    def describe(self) -> str:
        return f"pgqueue's schema at alembic revision {self.revision}"

    def _migrate(self, schema_editor: Any, revision: str, *, downgrade: bool) -> None:
        from pgqueue import migrate
        from pgqueue.contrib.django._app import database_alias, dsn_for

        connection = schema_editor.connection
        if connection.alias != database_alias():
            return
        # On a connection of its own, from the settings of the database being migrated (a
        # test runner's test database, too); alembic takes pgqueue's migration lock there.
        dsn = dsn_for(connection.settings_dict)
        with psycopg.connect(dsn, autocommit=True) as conn:
            current = current_revision(conn)
        if downgrade:
            if current is not None and _order(current) > _order(revision):
                migrate.downgrade(dsn, revision)
        elif current is None or _order(current) < _order(revision):
            # A schema already there (by `pgqueue migrate`, or newer) is left as it is.
            migrate.upgrade(dsn, revision)


def _order(revision: str) -> int:
    """A revision's place in pgqueue's history; one this pgqueue does not know is newer."""
    if revision == "base":
        return -1
    return REVISIONS.index(revision) if revision in REVISIONS else len(REVISIONS)
