"""The extensions, made without an app so that the factory can bind them to each app."""

from __future__ import annotations

from flask_sqlalchemy import SQLAlchemy

from pgqueue.contrib.flask import PgQueue

db = SQLAlchemy()
queue = PgQueue()
