"""pgqueue's schema as of alembic revision 0013: unique while queued (`unique_states=`)."""

from django.db import migrations

from ._alembic import AlembicRevision


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("pgqueue", "0006_workflows")]
    operations = [AlembicRevision("0013", "0012")]
