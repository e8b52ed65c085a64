"""pgqueue's schema as of alembic revision 0009: workflows (chain, group, chord, callbacks)."""

from django.db import migrations

from ._alembic import AlembicRevision


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("pgqueue", "0002_job_headers")]
    operations = [AlembicRevision("0009", "0008")]
