"""pgqueue's schema as of alembic revision 0008: job headers (trace context and the like)."""

from django.db import migrations

from ._alembic import AlembicRevision


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("pgqueue", "0001_pgqueue_schema")]
    operations = [AlembicRevision("0008", "0007")]
