"""A minimal claiming process, run as ``python -m tests.reliability.claim_loop``.

It stands in for the real Worker in the process-level reliability tests: the
same command-line shape (database URL, topic, mode, concurrency), one thread per
unit of concurrency, each with its own connection, and every delivery written to
the :mod:`deliveries <tests.reliability.deliveries>` ledger. Swapping it for the
Worker means changing only the command :func:`command` builds.

Modes (the two ways to use the claim, see ``programma_sa.queue``):

* ``lease`` — claim and record in one transaction and commit; "handle" outside
  any transaction; then move to done and stamp the ledger in a second one. A
  SIGKILL between the two leaves the job ACTIVE until its lease runs out.
* ``transaction`` — claim, record, handle, move to done and stamp, all in one
  transaction: a SIGKILL rolls everything back and the job is free at once.

The process exits 0 once no job of its topic is left unfinished, and stops
cleanly on SIGTERM. Database errors (a terminated backend, a restarting server)
are logged and retried on a fresh connection, as a worker must.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import sessionmaker

from programma_sa import DatabaseError, JobQueue, JobState

from ..app import Job
from . import deliveries

MODES = ("lease", "transaction")
_UNFINISHED = (JobState.CREATED.value, JobState.ACTIVE.value, JobState.PROCESSING.value)
_REPO_ROOT = Path(__file__).resolve().parents[2]
#: Logged each time a database error sends a thread back to retry.
RETRY_MESSAGE = "database error, retrying"

log = logging.getLogger("claim_loop")


def command(
    url: str,
    topic: str,
    *,
    mode: str,
    concurrency: int,
    batch: int = 5,
    work_seconds: float = 0.01,
    poll_seconds: float = 0.05,
) -> list[str]:
    """The argv that starts one claiming process (run it with cwd = the repository root)."""
    return [
        sys.executable,
        "-m",
        "tests.reliability.claim_loop",
        "--url",
        url,
        "--topic",
        topic,
        "--mode",
        mode,
        "--concurrency",
        str(concurrency),
        "--batch",
        str(batch),
        "--work-seconds",
        str(work_seconds),
        "--poll-seconds",
        str(poll_seconds),
    ]


def repository_root() -> Path:
    """The directory the command must run in (so ``tests`` is importable)."""
    return _REPO_ROOT


class ClaimLoop:
    """One process's claim loop; :meth:`run` drives ``concurrency`` threads."""

    def __init__(self, engine: Engine, args: argparse.Namespace) -> None:
        self.factory = sessionmaker(engine)
        self.engine = engine
        self.queue = JobQueue(Job)
        self.topic: str = args.topic
        self.mode: str = args.mode
        self.batch: int = args.batch
        self.work_seconds: float = args.work_seconds
        self.poll_seconds: float = args.poll_seconds
        self.concurrency: int = args.concurrency
        self.pid = os.getpid()
        self.stopping = threading.Event()

    def run(self) -> None:
        threads = [
            threading.Thread(target=self._thread, name=f"claimer-{n}", daemon=True)
            for n in range(self.concurrency)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _thread(self) -> None:
        while not self.stopping.is_set():
            try:
                handled = self._lease_round() if self.mode == "lease" else self._tx_round()
                if handled == 0 and self._drained():
                    return
            except (DatabaseError, sa_exc.DBAPIError) as error:
                # A terminated backend or a restarting server: the pool's
                # pre-ping replaces the dead connection on the next checkout.
                log.warning("pid %s: %s: %s", self.pid, RETRY_MESSAGE, error)
                handled = 0
            if handled == 0:
                self.stopping.wait(self.poll_seconds)

    def _lease_round(self) -> int:
        with self.factory.begin() as session:
            jobs = self.queue.claim_jobs(session, self.topic, max_jobs=self.batch)
            ledger_ids = deliveries.record(session, jobs, self.pid)
        for job, ledger_id in zip(jobs, ledger_ids, strict=True):
            self._handle()
            with self.factory.begin() as session:
                self.queue.move_job_to_done(session, job.id)
                deliveries.mark_completed(session, ledger_id)
            log.debug("pid %s: completed job %s (topic %s)", self.pid, job.id, job.topic)
        return len(jobs)

    def _tx_round(self) -> int:
        with self.factory.begin() as session:
            jobs = self.queue.claim_jobs(session, self.topic, max_jobs=self.batch)
            ledger_ids = deliveries.record(session, jobs, self.pid)
            for job, ledger_id in zip(jobs, ledger_ids, strict=True):
                self._handle()
                self.queue.move_job_to_done(session, job.id)
                deliveries.mark_completed(session, ledger_id)
        return len(jobs)

    def _handle(self) -> None:
        if self.work_seconds:
            time.sleep(self.work_seconds)

    def _drained(self) -> bool:
        with self.engine.connect() as connection:
            left = connection.execute(
                select(func.count())
                .select_from(Job)
                .where(Job.topic == self.topic, Job.state.in_(_UNFINISHED))
            ).scalar_one()
        return left == 0


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="claim_loop", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--work-seconds", type=float, default=0.01)
    parser.add_argument("--poll-seconds", type=float, default=0.05)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    engine = create_engine(args.url, pool_size=args.concurrency, max_overflow=1, pool_pre_ping=True)
    loop = ClaimLoop(engine, args)
    signal.signal(signal.SIGTERM, lambda *_: loop.stopping.set())
    log.info("pid %s: claiming topic %s in %s mode", loop.pid, args.topic, args.mode)
    try:
        loop.run()
    finally:
        engine.dispose()
    log.info("pid %s: done", loop.pid)


if __name__ == "__main__":
    main()
