"""An order shop on Flask and Flask-SQLAlchemy whose jobs are enqueued in `db.session`'s
transaction: an order and its shipping job are committed together, or not at all.

    export FLASK_SQLALCHEMY_DATABASE_URI=postgresql+psycopg://localhost/shop
    flask --app flaskshop pgqueue migrate     # pgqueue's tables
    flask --app flaskshop init-db             # the shop's tables
    flask --app flaskshop pgqueue worker      # in one terminal
    flask --app flaskshop run                 # in another

(run from examples/flask; see docs/flask.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
from flask import Flask

from flaskshop.extensions import db, queue


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The application factory: settings from FLASK_* environment variables, then `config`."""
    app = Flask(__name__)
    app.config.from_prefixed_env()  # FLASK_SQLALCHEMY_DATABASE_URI=postgresql+psycopg://...
    app.config.update(config or {})
    db.init_app(app)
    queue.init_app(app)  # the same database: PGQUEUE_DSN, else SQLALCHEMY_DATABASE_URI

    from flaskshop import tasks, views  # noqa: F401  (registers the tasks)

    app.register_blueprint(views.shop)

    @app.cli.command("init-db")
    def init_db() -> None:
        """Create the shop's tables."""
        db.create_all()
        click.echo("shop tables created")

    return app
