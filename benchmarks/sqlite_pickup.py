"""Pickup latency of a Worker on SQLite, which polls (no LISTEN/NOTIFY there).

One job at a time is enqueued at a random moment of the worker's heartbeat; the
figure is the time from the enqueue's commit to the handler's start::

    python -m benchmarks.sqlite_pickup --heartbeat 0.5 --jobs 40
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from programma_sa import JobContext, JobQueue, Worker, migrations

from .app import Job


def measure(heartbeat: float, jobs: int) -> list[float]:
    """The pickup latency of each of ``jobs`` jobs, in seconds."""
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'pickup.db'}"
        migrations.upgrade(url)
        engine = create_engine(url)
        queue = JobQueue(Job)
        latencies: list[float] = []
        started = threading.Event()
        committed = [0.0]

        def handler(ctx: JobContext) -> None:
            latencies.append(time.monotonic() - committed[0])
            started.set()

        worker = Worker(queue, engine, "pickup", handler, heartbeat=heartbeat)
        loop = threading.Thread(target=worker.run, kwargs={"install_signal_handlers": False})
        loop.start()
        rng = random.Random(1)
        try:
            for n in range(jobs):
                time.sleep(rng.uniform(0, heartbeat))
                started.clear()
                with Session(engine) as session, session.begin():
                    queue.add_job(session, "pickup", n)
                    committed[0] = time.monotonic()  # the commit follows at once
                if not started.wait(3 * heartbeat + 5):
                    raise RuntimeError(f"job {n} was not picked up")
        finally:
            worker.stop()
            loop.join()
            engine.dispose()
        return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--heartbeat", type=float, default=5.0)
    parser.add_argument("--jobs", type=int, default=20)
    args = parser.parse_args()
    latencies = sorted(measure(args.heartbeat, args.jobs))
    p95 = latencies[max(0, round(0.95 * len(latencies)) - 1)]
    print(
        f"heartbeat {args.heartbeat} s, {len(latencies)} jobs: pickup p50 "
        f"{statistics.median(latencies) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
        f"max {latencies[-1] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
