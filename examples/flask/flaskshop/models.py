"""The shop's one table."""

from __future__ import annotations

from sqlalchemy.orm import Mapped, mapped_column

from flaskshop.extensions import db


class Order(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "flaskshop_orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    item: Mapped[str]
    quantity: Mapped[int]
    status: Mapped[str] = mapped_column(default="new")
