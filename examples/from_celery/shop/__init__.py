"""A small shop's background jobs, ported from Celery to pgqueue: see docs/from-celery.md."""
