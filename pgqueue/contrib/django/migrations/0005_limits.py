"""pgqueue's schema as of alembic revision 0011: fleet-wide limits on tasks."""

from django.db import migrations

from ._alembic import AlembicRevision


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("pgqueue", "0004_job_progress")]
    operations = [AlembicRevision("0011", "0010")]
