"""Fault injection for the process-level reliability tests.

* :class:`WorkerPool` — runs N :mod:`worker processes <tests.reliability.worker_process>`
  from one argv, SIGKILLs a random one, replaces it, and finally SIGTERMs them all,
  checking that each stops gracefully.
* :func:`terminate_backends` — ``pg_terminate_backend`` of every other client
  backend of a database, as a failover or an admin's kill would.
* :func:`restart` — stop and start an embedded PostgreSQL server the test owns.
"""

from __future__ import annotations

import os
import random
import shutil
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

    def rss_bytes(self) -> int:
        """The process's resident set size (``VmRSS`` from ``/proc``; Linux)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        (line,) = (line for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(line.split()[1]) * 1024

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float) -> bool:
        """Wait until ``needle`` appears in the log; False if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while needle not in self.log_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def log_tail(self, lines: int = 20) -> str:
        text_lines = self.log_text().splitlines()
        return "\n".join(text_lines[-lines:])


@dataclass
class WorkerPool:
    """Worker processes started from ``argv`` in ``cwd``; a context manager that
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

    def pids(self) -> list[int]:
        """The pids of the live processes, in start order."""
        return [worker.pid for worker in self.alive()]

    def shutdown(self, timeout: float, started: str) -> None:
        """SIGTERM every live process and wait for each to exit 0 (a graceful stop).

        A process is signalled only once its log shows ``started`` (its SIGTERM
        handler is in place: before that, the signal's default action would kill
        a replacement still importing). Raises (with their logs) if one exits
        otherwise or is still running after ``timeout`` seconds; whatever is left
        is then killed.
        """
        deadline = time.monotonic() + timeout
        running = self.alive()
        for worker in running:
            worker.wait_for_log(started, max(0.0, deadline - time.monotonic()))
            worker.process.terminate()
        failures = []
        for worker in running:
            try:
                code = worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                failures.append(f"worker {worker.pid} ignored SIGTERM for {timeout} s")
                continue
            if code != 0:
                failures.append(f"worker {worker.pid} exited with {code} on SIGTERM")
        if failures:
            self.stop()
            raise AssertionError("; ".join(failures) + f":\n{self.logs()}")

    def stop(self) -> None:
        """Stop whatever is still running, without judging how (cleanup after a failure)."""
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
        return sum(worker.log_text().count(needle) for worker in self.processes)

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
        if exc_type is None:  # the logs are kept only when they explain a failure
            shutil.rmtree(self._log_dir, ignore_errors=True)


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
