"""The real :class:`~programma_sa.Worker` in a process of its own.

Run as ``python -m tests.reliability.worker_process --database-url URL --topic T
--mode lease|transaction --concurrency N`` (from the repository root; :func:`command`
builds the argv). It runs ``Worker.run()`` on the main thread with LISTEN on, so
SIGTERM stops it gracefully (exit status 0), and a handler that writes every
delivery to the :mod:`deliveries <tests.reliability.deliveries>` ledger:

* ``transaction`` mode — one ledger row, stamped completed, written with
  ``ctx.session``: it commits with the job's completion, or (crash, lost
  connection) is rolled back with it. The ledger then holds exactly the
  completions that happened.
* ``lease`` mode — a row when the handler starts, in a short transaction of its
  own, and its completion stamp in another when the work is done: a delivery cut
  short by a crash stays visible, with its lease. A ledger write that fails (a
  terminated backend, a restarting server) is retried until it lands, so a
  database fault never turns into a handler error (which the worker would answer
  with a retry backoff shorter than the lease) — only into a later write.

With ``--no-ledger`` (the soak) the handler only does its simulated work; the jobs
table alone is then the witness.

Every connection of the process (the pool's and the Worker's listener) carries the
application name ``reliability-worker-<pid>``, so a test can find this worker's
backends, and its LISTEN, in ``pg_stat_activity``.

The process runs until it is stopped: a test judges a drain from the database,
then SIGTERMs its workers.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from programma_sa import JobContext, JobQueue, Worker

from ..app import Job
from . import deliveries

MODES = ("lease", "transaction")
APPLICATION_PREFIX = "reliability-worker-"
#: Logged each time a lease-mode ledger write is retried after a database error.
LEDGER_RETRY_MESSAGE = "ledger write failed, retrying"
_REPO_ROOT = Path(__file__).resolve().parents[2]

log = logging.getLogger("worker_process")


def command(
    url: str,
    topic: str,
    *,
    mode: str,
    concurrency: int,
    heartbeat: float = 10.0,
    max_jobs: int = 5,
    work_seconds: float = 0.005,
    ledger: bool = True,
) -> list[str]:
    """The argv that starts one worker process (run it with cwd = :func:`repository_root`)."""
    return [
        sys.executable,
        "-m",
        "tests.reliability.worker_process",
        "--database-url",
        url,
        "--topic",
        topic,
        "--mode",
        mode,
        "--concurrency",
        str(concurrency),
        "--heartbeat",
        str(heartbeat),
        "--max-jobs",
        str(max_jobs),
        "--work-seconds",
        str(work_seconds),
        "--ledger" if ledger else "--no-ledger",
    ]


def repository_root() -> Path:
    """The directory the command must run in (so ``tests`` is importable)."""
    return _REPO_ROOT


def application_name(pid: int) -> str:
    """The ``application_name`` of every connection of the worker process ``pid``."""
    return f"{APPLICATION_PREFIX}{pid}"


class LedgerHandler:
    """The handler: simulate ``work_seconds`` of work, write the delivery to the ledger
    (unless ``ledger`` is False: the soak judges the jobs table alone)."""

    def __init__(self, factory: sessionmaker[Session], work_seconds: float, ledger: bool) -> None:
        self.factory = factory
        self.work_seconds = work_seconds
        self.ledger = ledger
        self.pid = os.getpid()

    def __call__(self, ctx: JobContext) -> None:
        if not self.ledger:  # the soak: the Worker's own writes only
            self._work()
            return
        if ctx.session is not None:  # transaction mode: commits with the completion
            self._work()
            deliveries.record(ctx.session, ctx.job, self.pid, completed=True)
            return
        job, pid = ctx.job, self.pid

        def record(session: Session, retried: bool) -> None:
            # A retried write may follow a commit that landed but whose reply was lost.
            if not (retried and deliveries.is_recorded(session, job, pid)):
                deliveries.record(session, job, pid, completed=False)

        self._write(ctx, record)
        self._work()
        self._write(ctx, lambda session, _: deliveries.mark_completed(session, job, pid))

    def _work(self) -> None:
        if self.work_seconds:
            time.sleep(self.work_seconds)

    def _write(self, ctx: JobContext, write: Callable[[Session, bool], None]) -> None:
        """Run ``write(session, retried)`` in a transaction of its own until it commits."""
        delay, retried = 0.05, False
        while True:
            try:
                with self.factory.begin() as session:
                    write(session, retried)
                return
            except sa_exc.DBAPIError as error:
                if ctx.stopping:
                    raise
                log.warning(
                    "pid %s: job %s: %s in %.2f s: %s",
                    self.pid,
                    ctx.job.id,
                    LEDGER_RETRY_MESSAGE,
                    delay,
                    str(error).splitlines()[0],
                )
            time.sleep(delay)
            delay, retried = min(delay * 2, 1.0), True


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="worker_process", description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--heartbeat", type=float, default=10.0)
    parser.add_argument("--max-jobs", type=int, default=5)
    parser.add_argument("--work-seconds", type=float, default=0.005)
    parser.add_argument("--ledger", action=argparse.BooleanOptionalAction, default=True)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    url = make_url(args.database_url).update_query_dict(
        {"application_name": application_name(os.getpid())}
    )
    # The default engine (no pre-ping): a dead pooled connection surfaces as an
    # error the Worker must ride out, as it would in an application. Room for every
    # handler thread's session plus the loop's claim.
    engine = create_engine(url, pool_size=args.concurrency + 1, max_overflow=1)
    # The Worker gets the engine, as most applications give it; the lease-mode
    # ledger writes share its pool through a sessionmaker of their own.
    worker = Worker(
        JobQueue(Job),
        engine,
        args.topic,
        LedgerHandler(sessionmaker(engine), args.work_seconds, args.ledger),
        mode=args.mode,
        heartbeat=args.heartbeat,
        max_jobs=args.max_jobs,
        concurrency=args.concurrency,
        listen=True,
        shutdown_timeout=5.0,
    )
    try:
        totals = worker.run()  # on the main thread: SIGTERM stops it gracefully
    finally:
        engine.dispose()
    log.info("pid %s: exiting after %s", os.getpid(), totals)


if __name__ == "__main__":
    main()
