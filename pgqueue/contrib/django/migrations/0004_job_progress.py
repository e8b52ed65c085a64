"""pgqueue's schema as of alembic revision 0010: job progress (`set_progress`)."""

from django.db import migrations

from ._alembic import AlembicRevision


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("pgqueue", "0003_unique_jobs")]
    operations = [AlembicRevision("0010", "0009")]
