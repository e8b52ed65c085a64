"""An application's own alembic environment, as in docs/migrations.md."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    # Keep autogenerate from proposing to drop pgqueue's tables.
    include_name=lambda name, type_, parent: not (name or "").startswith("pgqueue_"),
)
with context.begin_transaction():
    context.run_migrations()
