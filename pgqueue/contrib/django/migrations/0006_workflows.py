"""pgqueue's schema as of alembic revision 0012: workflows (chain, group, chord, callbacks)."""

from django.db import migrations

from ._alembic import AlembicRevision


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("pgqueue", "0005_limits")]
    operations = [AlembicRevision("0012", "0011")]
