"""programma_sa — a PostgreSQL job queue inside your SQLAlchemy application.

Add :class:`JobMixin` to a model on your own ``DeclarativeBase``, apply the shipped
Alembic chain (branch ``programma``), and use :class:`JobQueue` with your own
``Session``: jobs are enqueued in the same transaction as your business rows, and
claimed with ``FOR UPDATE SKIP LOCKED`` inside your transaction boundaries.
"""

from importlib.metadata import PackageNotFoundError, version

from ._job_records import CancelOutcome, ClaimedJob, JobDetail, JobPage, JobSpec, PausedTopic
from ._retention import TTL, Retention
from ._stats import QueueStats, TopicStats
from .async_queue import AsyncJobQueue
from .exceptions import (
    CommitFailed,
    ConfigurationError,
    DatabaseError,
    DuplicateJob,
    InstanceNotFound,
    InvalidJobInput,
    JobCancelled,
    JobNotFound,
    PayloadTooLarge,
    PermanentFailure,
    ProgrammaError,
    SchemaNotReady,
    TaskDocumentError,
    TransactionLost,
    WaitTimeout,
)
from .maintenance import AsyncPruner, Pruner, PruneResult
from .models import JobMixin, JobState, jobs_table
from .queue import JobQueue
from .retry import RetryPolicy
from .schedules import Schedule
from .tasks import Task, TaskRegistry, TaskRun, Unique
from .uniqueness import OnConflict, unique_key
from .worker import JobContext, PassResult, Worker, WorkerSettings
from .worker.async_driver import AsyncJobContext, AsyncWorker
from .worker.steps import JobSnoozed

try:
    __version__ = version("programma-sa")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "TTL",
    "AsyncJobContext",
    "AsyncJobQueue",
    "AsyncPruner",
    "AsyncWorker",
    "CancelOutcome",
    "ClaimedJob",
    "CommitFailed",
    "ConfigurationError",
    "DatabaseError",
    "DuplicateJob",
    "InstanceNotFound",
    "InvalidJobInput",
    "JobCancelled",
    "JobContext",
    "JobDetail",
    "JobMixin",
    "JobNotFound",
    "JobPage",
    "JobQueue",
    "JobSnoozed",
    "JobSpec",
    "JobState",
    "OnConflict",
    "PassResult",
    "PausedTopic",
    "PayloadTooLarge",
    "PermanentFailure",
    "ProgrammaError",
    "PruneResult",
    "Pruner",
    "QueueStats",
    "Retention",
    "RetryPolicy",
    "Schedule",
    "SchemaNotReady",
    "Task",
    "TaskDocumentError",
    "TaskRegistry",
    "TaskRun",
    "TopicStats",
    "TransactionLost",
    "Unique",
    "WaitTimeout",
    "Worker",
    "WorkerSettings",
    "__version__",
    "jobs_table",
    "unique_key",
]
