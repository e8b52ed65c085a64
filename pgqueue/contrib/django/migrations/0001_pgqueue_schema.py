"""pgqueue's schema as of alembic revision 0007 (jobs, workers, schedules, statistics).

A later pgqueue release that adds an alembic revision adds a migration here that upgrades to
it (tests check that the last one here is alembic's head)."""

from django.db import migrations

from ._alembic import AlembicRevision


class Migration(migrations.Migration):
    initial = True
    atomic = False
    dependencies: list[tuple[str, str]] = []
    operations = [AlembicRevision("0007", "base")]
