"""The names pgqueue's SQL shares with its code: notification channels, the advisory-lock
namespace, the alembic version table. A leaf module, so that the engine's modules need not
import the SQLAlchemy metadata (schema.py) to know them."""

from __future__ import annotations

VERSION_TABLE = "pgqueue_alembic_version"
HOT_TABLE = "pgqueue_jobs"
NOTIFY_ENQUEUED = "pgqueue_enqueued"
NOTIFY_FINISHED = "pgqueue_finished"
NOTIFY_CANCEL = "pgqueue_cancel"
# Payload: the id of a job whose progress was just written.
NOTIFY_PROGRESS = "pgqueue_progress"
# First key of the two-key advisory locks that pgqueue workers hold (ASCII "pgqu").
ADVISORY_LOCK_NAMESPACE = 0x70677175
