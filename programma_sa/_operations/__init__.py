"""Operations: what the queue does, as data — checked arguments, a named statement,
its parameters and the reader of its result. No I/O happens in this package.

An :class:`Operation` names one statement of the driver (:mod:`programma_sa._drivers`)
rather than holding it: the execution layer (:mod:`programma_sa._execute`) takes the
statement from the driver of the database it runs on. Work of several statements
(a prune batch, the claim of a pass over several topics) is a generator of
operations, driven the same way by the sync and the async code.

* :mod:`.jobs` — :class:`~.jobs.JobOperations`: enqueue, claim, the seed's per-job
  moves and setters, and the worker's guarded outcome writes;
* :mod:`.control` — :class:`~.control.ControlOperations`: cancel, pause, re-run and
  list jobs, and wait for one to finish;
* :mod:`.maintenance` — :class:`~.maintenance.MaintenanceOperations`: statistics and
  the batches of a prune.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Result, Table

from .._drivers import StatementName

__all__ = ["Operation"]

T = TypeVar("T")


@dataclass(frozen=True)
class Operation(Generic[T]):
    """One statement of ``table`` to execute, by name, and how to read its result.

    ``variant``: for a statement of a :data:`~programma_sa._drivers.base.StatementFamily`
    (a listing), the shape of this call — which optional criteria it gives.

    ``read_rows``: the same reader, given the returned rows as mappings (the
    statement's result keys) instead of a ``Result`` — what an execution without
    SQLAlchemy's result objects reads (the Worker's direct claim,
    :func:`programma_sa._execute.execute_direct`); ``None``: the operation has no
    such reader, and always runs through SQLAlchemy.
    """

    table: Table
    statement: StatementName
    params: dict[str, Any]
    read: Callable[[Result[Any]], T]
    variant: Hashable = None
    read_rows: Callable[[Sequence[Mapping[Any, Any]]], T] | None = None
