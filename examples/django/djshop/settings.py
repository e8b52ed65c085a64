"""Settings of the example shop: one PostgreSQL database, holding the shop's tables and pgqueue's.

The database: $DJSHOP_DATABASE_URL, else $PGQUEUE_TEST_DSN (the tests), else a local
`djshop` database (`createdb djshop` first).
"""

import os

from psycopg.conninfo import conninfo_to_dict

DATABASE_URL = (
    os.environ.get("DJSHOP_DATABASE_URL")
    or os.environ.get("PGQUEUE_TEST_DSN")
    or "postgresql://postgres@127.0.0.1:5432/djshop"
)
_params = conninfo_to_dict(DATABASE_URL)

SECRET_KEY = "example-only-not-a-secret"
DEBUG = True
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "djshop.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "pgqueue.contrib.django",  # pgqueue's tables (manage.py migrate) and its commands
    "orders",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _params.get("dbname", "djshop"),
        "USER": _params.get("user", ""),
        "PASSWORD": _params.get("password", ""),
        "HOST": _params.get("host", ""),
        "PORT": _params.get("port", ""),
    }
}

# Django's own Tasks framework, run by pgqueue's workers.
TASKS = {
    "default": {
        "BACKEND": "pgqueue.contrib.django.PgQueueBackend",
        "QUEUES": ["default", "emails"],
    }
}

# pgqueue's settings: all optional; pgqueue uses DATABASES["default"] unless told otherwise.
PGQUEUE = {"DEFAULT_QUEUE": "default"}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django.tasks": {"handlers": ["console"], "level": "INFO"}},
}
