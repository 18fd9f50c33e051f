"""Flask and Flask-SQLAlchemy: handlers in the app context, and ``flask programma``.

::

    from programma_sa.flask import Programma

    db = SQLAlchemy(model_class=Base)
    queue = JobQueue(Job)                 # class Job(JobMixin, db.Model)
    programma = Programma(db, queue)

    def create_app():
        app = Flask(__name__)
        db.init_app(app)
        programma.init_app(app)
        return app

then ``flask programma worker myapp.jobs:send_welcome --topic send-welcome --mode
transaction`` runs a worker for the app, and ``flask programma enqueue|job|stats|prune|
migrate|demo`` are ``programma-sa``'s commands on the app's database and jobs table.

What it solves:

* **The app context.** A worker runs handlers on threads of its own, where no app
  context is pushed — not even one pushed at import time, as RQ users do — so
  ``current_app`` or ``db.session`` fails with "Working outside of application
  context". Each handler runs inside an app context of its own
  (:meth:`Programma.handler_context`, the worker's ``handler_context`` setting).
* **``db.session`` in transaction mode.** The worker's claim holds the job's row lock
  until its transaction ends; ``db.session`` on a connection of its own would wait for
  that lock forever the moment a handler updates its own job through it. For the
  handler's duration ``db.session`` is bound to the claim's transaction instead — a
  session on the claim's connection, inside the handler's SAVEPOINT — so its writes
  commit with the job's completion, or roll back with it. ``db.session.commit()``
  there commits nothing yet: it releases a SAVEPOINT of its own. In lease mode
  ``db.session`` is Flask-SQLAlchemy's usual session: commit your writes.

Only the sync :class:`~programma_sa.Worker` runs Flask handlers (Flask-SQLAlchemy's
session is synchronous).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session
from typing_extensions import Unpack

from ._sqla_compat import scoped_registry, session_options
from .cli import CommandHost, main
from .exceptions import ConfigurationError
from .queue import JobQueue
from .worker import Handler, JobContext, Worker, WorkerOptions

__all__ = ["EXTENSION_KEY", "Programma"]

#: Where :meth:`Programma.init_app` registers the extension in ``app.extensions``.
EXTENSION_KEY = "programma"


class Programma:
    """The Flask extension of programma_sa for one Flask-SQLAlchemy ``db`` and one queue.

    :param db: the app's ``SQLAlchemy`` instance; its ``db.session`` is bound to the
        claim's transaction while a transaction-mode handler runs.
    :param queue: the :class:`~programma_sa.JobQueue` of the app's jobs model;
        ``flask programma`` commands act on its table.
    :param app: a Flask app to initialise now (or call :meth:`init_app` later).
    """

    def __init__(self, db: SQLAlchemy, queue: JobQueue, app: Flask | None = None) -> None:
        if not isinstance(queue, JobQueue):
            raise ConfigurationError(f"queue must be a JobQueue, got {queue!r}")
        self.db = db
        self.queue = queue
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the extension on ``app`` and add the ``flask programma`` commands."""
        app.extensions[EXTENSION_KEY] = self
        app.cli.add_command(programma_command)

    def handler_context(
        self, app: Flask | None = None
    ) -> Callable[[JobContext], AbstractContextManager[None]]:
        """The worker's ``handler_context`` for ``app`` (default: the current app):
        each handler runs in an app context of its own and, in transaction mode,
        with ``db.session`` bound to the claim's transaction (see the module docs).

        ::

            Worker(queue, engine, "send-welcome", send_welcome, mode="transaction",
                   handler_context=programma.handler_context(app))
        """
        target = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
        return functools.partial(self._handler_context, target)

    def worker(
        self,
        topics: str | Sequence[str],
        handler: Handler,
        *,
        app: Flask | None = None,
        **options: Unpack[WorkerOptions],
    ) -> Worker:
        """A :class:`~programma_sa.Worker` for ``app`` (default: the current app) on
        the engine of its jobs table, running each handler in :meth:`handler_context`.

        :param options: the worker's other settings, by keyword (``mode``,
            ``concurrency``, …).
        """
        target = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
        with target.app_context():
            engine = self._jobs_engine()
        options.setdefault("handler_context", self.handler_context(target))
        return Worker(self.queue, engine, topics, handler, **options)

    def command_host(self) -> CommandHost:
        """What ``flask programma`` runs ``programma-sa``'s commands with, for the
        current app: its database URL, its jobs table, :meth:`handler_context`."""
        table = self.queue.table
        return CommandHost(
            prog="flask programma",
            database_url=self._jobs_engine().url,
            table_name=table.name,
            schema=table.schema,
            handler_context=self.handler_context(),
        )

    def _jobs_engine(self) -> Engine:
        """The engine of the current app that Flask-SQLAlchemy uses for the jobs table:
        that of its metadata's bind key (``__bind_key__``), else the default one."""
        return self.db.engines[self.queue.table.metadata.info.get("bind_key")]

    @contextmanager
    def _handler_context(self, app: Flask, ctx: JobContext) -> Iterator[None]:
        with app.app_context():
            if ctx.session is None:  # lease mode: db.session as Flask-SQLAlchemy makes it
                yield
                return
            claim = ctx.session.connection(bind_arguments={"clause": ctx.queue.table})
            if not _same_database(self._jobs_engine().url, claim.engine.url):
                # The jobs live in another database than the app's: db.session cannot
                # wait for the claim's lock, nor join its transaction.
                yield
                return
            with self._session_on(claim):
                yield

    @contextmanager
    def _session_on(self, claim: Connection) -> Iterator[None]:
        """Make ``db.session`` (for the current app context) a session on the claim's
        connection, inside a SAVEPOINT of its own, until the handler is done."""
        factory = self.db.session.session_factory
        options = {**session_options(factory), "join_transaction_mode": "create_savepoint"}
        session = _claim_bound_class(factory.class_)(claim_connection=claim, **options)
        registry = scoped_registry(self.db.session)
        registry.set(session)
        try:
            yield
            # The handler returned: its db.session writes stay in the claim's
            # transaction (committed with the job's completion, or not at all).
            session.commit()
        finally:
            # After an error, close() rolls the session's SAVEPOINT back; the claim's
            # connection and transaction are not the session's to end.
            session.close()
            registry.clear()


def _same_database(a: URL, b: URL) -> bool:
    """Whether two URLs reach the same database (whatever their drivers)."""

    def address(url: URL) -> URL:
        return url.set(drivername="postgresql", password=None)

    return address(a) == address(b)


class _ClaimBoundSession(Session):
    """A session that uses a claim's connection for every engine on the claim's
    database; other binds (another database) are left as its class picks them."""

    def __init__(self, *, claim_connection: Connection, **options: Any) -> None:
        super().__init__(**options)
        self._claim_connection = claim_connection

    def get_bind(self, *args: Any, **kwargs: Any) -> Engine | Connection:
        chosen: Engine | Connection = super().get_bind(*args, **kwargs)
        claim = self._claim_connection
        if chosen is claim or _same_database(chosen.engine.url, claim.engine.url):
            return claim
        return chosen


#: The claim-bound class made for each session class of an app, made once.
_CLAIM_BOUND: dict[type[Session], type[_ClaimBoundSession]] = {}


def _claim_bound_class(base: type[Session]) -> type[_ClaimBoundSession]:
    """``base`` (the app's session class, Flask-SQLAlchemy's binds and all) bound to
    a claim's connection (:class:`_ClaimBoundSession` first in its MRO)."""
    bound = _CLAIM_BOUND.get(base)
    if bound is None:
        # Made once per class: SQLAlchemy keeps event registrations per session class.
        bound = _CLAIM_BOUND.setdefault(
            base, type(f"ClaimBound{base.__name__}", (_ClaimBoundSession, base), {})
        )
    return bound


@click.command(
    "programma",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,  # --help goes to the commands, which print their own
)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
@with_appcontext
def programma_command(argv: tuple[str, ...]) -> None:
    """programma-sa's commands on this app's database and jobs table (see --help)."""
    extension: Programma = current_app.extensions[EXTENSION_KEY]
    sys.exit(main(list(argv), extension.command_host()))
