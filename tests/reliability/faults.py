"""Fault injection for the process-level reliability tests.

* :class:`WorkerPool` — runs N claiming processes from one argv (the simple
  :mod:`claim loop <tests.reliability.claim_loop>` today, the real Worker later),
  SIGKILLs a random one, replaces it, and waits for the drain to finish.
* :func:`terminate_backends` — ``pg_terminate_backend`` of every other client
  backend of a database, as a failover or an admin's kill would.
* :func:`restart` — stop and start an embedded PostgreSQL server the test owns.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from programma_sa._embedded import EmbeddedPostgres


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        text_lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text_lines[-lines:])


@dataclass
class WorkerPool:
    """Claiming processes started from ``argv`` in ``cwd``; a context manager that
    stops whatever is still running on exit."""

    argv: Sequence[str]
    cwd: Path
    processes: list[WorkerProcess] = field(default_factory=list)
    _log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="workers-")))

    def spawn(self, count: int = 1) -> list[WorkerProcess]:
        started = []
        for _ in range(count):
            log_path = self._log_dir / f"worker-{len(self.processes)}.log"
            with log_path.open("wb") as log_file:
                process = subprocess.Popen(
                    list(self.argv), cwd=self.cwd, stdout=log_file, stderr=subprocess.STDOUT
                )
            worker = WorkerProcess(process, log_path)
            self.processes.append(worker)
            started.append(worker)
        return started

    def alive(self) -> list[WorkerProcess]:
        return [worker for worker in self.processes if worker.process.poll() is None]

    def kill(self, worker: WorkerProcess) -> None:
        """SIGKILL ``worker`` and reap it: no cleanup, no rollback message, no goodbye."""
        os.kill(worker.pid, signal.SIGKILL)
        worker.process.wait()
        worker.killed = True

    def choose(self, rng: random.Random) -> WorkerProcess:
        alive = self.alive()
        if not alive:
            raise RuntimeError("no worker process is alive")
        return rng.choice(alive)

    def wait(self, timeout: float) -> None:
        """Wait for every live process to exit; raise with their logs if one fails or hangs."""
        deadline = time.monotonic() + timeout
        for worker in self.processes:
            if worker.killed:
                continue
            try:
                code = worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stop()
                raise AssertionError(
                    f"worker {worker.pid} did not finish within {timeout} s:\n{self.logs()}"
                ) from None
            if code != 0:
                raise AssertionError(f"worker {worker.pid} exited with {code}:\n{self.logs()}")

    def stop(self) -> None:
        for worker in self.alive():
            worker.process.terminate()
        for worker in self.processes:
            try:
                worker.process.wait(10)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()

    def count_in_logs(self, needle: str) -> int:
        """How many times ``needle`` appears in the logs of every process so far."""
        return sum(
            worker.log_path.read_text(errors="replace").count(needle) for worker in self.processes
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- worker {worker.pid}{' (killed)' if worker.killed else ''}\n{worker.log_tail()}"
            for worker in self.processes
        )

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def terminate_backends(url: str, timeout_ms: int = 5_000) -> int:
    """Terminate every other client backend connected to the database of ``url``.

    Waits (up to ``timeout_ms`` each) until each backend is really gone, so the
    caller's next step sees a database with no old sessions. Returns how many.
    """
    engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    text(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, :timeout))"
                        " FROM pg_stat_activity"
                        " WHERE datname = current_database()"
                        " AND pid <> pg_backend_pid()"
                        " AND backend_type = 'client backend'"
                    ),
                    {"timeout": timeout_ms},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def restart(server: EmbeddedPostgres, downtime: float = 0.0) -> None:
    """Stop the embedded server (clients are disconnected), wait, start it again."""
    server.stop()
    if downtime:
        time.sleep(downtime)
    server.start()
