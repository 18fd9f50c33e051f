"""The shop's tables: its own business table and the programma jobs model, one metadata."""

from __future__ import annotations

from sqlalchemy import Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from programma_sa import AsyncJobQueue, JobMixin

#: The topic of the job each new order enqueues.
CONFIRM_ORDER = "confirm-order"


class Base(DeclarativeBase):
    pass


class Job(JobMixin, Base):
    """The jobs table ("programma_jobs"), created by programma's migrations."""


class Item(Base):
    __tablename__ = "shop_items"

    sku: Mapped[str] = mapped_column(String(50), primary_key=True)
    in_stock: Mapped[int] = mapped_column(Integer)


class Order(Base):
    __tablename__ = "shop_orders"

    # Chosen by the client, so a repeated request is a duplicate key.
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="pending")


queue = AsyncJobQueue(Job)
