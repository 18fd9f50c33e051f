"""The benchmark application: its own ``DeclarativeBase``, a business table, the jobs model."""

from __future__ import annotations

from sqlalchemy import Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from programma_sa import JobMixin


class Base(DeclarativeBase):
    pass


class Job(JobMixin, Base):
    """The default table, ``programma_jobs``, as the shipped migration creates it."""


ORDERS = "bench_orders"


class Order(Base):
    """The business row written beside each enqueue."""

    __tablename__ = ORDERS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    note: Mapped[str] = mapped_column(String(200), default="")
