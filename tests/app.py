"""A tiny application for the tests: its own DeclarativeBase, a business table, the jobs model."""

from __future__ import annotations

from sqlalchemy import Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from programma_sa import JobMixin


class Base(DeclarativeBase):
    pass


class Job(JobMixin, Base):
    pass


class Order(Base):
    """A business row written beside enqueues."""

    __tablename__ = "orders"

    # Ids are given (a job's number, from 0): never AUTO_INCREMENT, which on MariaDB
    # would turn an id of 0 into the next number.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    note: Mapped[str] = mapped_column(String(200), default="")
