"""programma_sa — a PostgreSQL job queue inside your SQLAlchemy application.

Add :class:`JobMixin` to a model on your own ``DeclarativeBase``, apply the shipped
Alembic chain (branch ``programma``), and use :class:`JobQueue` with your own
``Session``: jobs are enqueued in the same transaction as your business rows, and
claimed with ``FOR UPDATE SKIP LOCKED`` inside your transaction boundaries.
"""

from importlib.metadata import PackageNotFoundError, version

from ._records import ClaimedJob, JobDetail, JobSpec
from .exceptions import (
    ConfigurationError,
    DatabaseError,
    InvalidJobInput,
    PayloadTooLarge,
    ProgrammaError,
    SchemaNotReady,
)
from .models import JobMixin, JobState
from .queue import JobQueue, jobs_table

try:
    __version__ = version("programma-sa")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "ClaimedJob",
    "ConfigurationError",
    "DatabaseError",
    "InvalidJobInput",
    "JobDetail",
    "JobMixin",
    "JobQueue",
    "JobSpec",
    "JobState",
    "PayloadTooLarge",
    "ProgrammaError",
    "SchemaNotReady",
    "__version__",
    "jobs_table",
]
