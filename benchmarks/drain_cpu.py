"""Client CPU of a lease-mode Worker drain, per job: where a drain's time goes.

::

    python -m benchmarks.drain_cpu [--max-jobs N|auto] [--concurrency C] [--jobs 20000]
    python -m benchmarks.drain_cpu --profile [--sort tottime] ...

A fresh migrated database gets ``--jobs`` due jobs (``VACUUM ANALYZE``d); a Worker
(no-op handler, ``listen=False``, warmed up on a topic of its own, as in the drain
workloads of :mod:`benchmarks.workloads.worker`) drains them with ``Worker.start()``
— the real loop — and the script prints the wall-clock rate and the process's CPU
time per job (``time.process_time``: this process's threads only, not PostgreSQL's).
On a shared machine the CPU time per job moves far less than the wall-clock rate,
so compare code by it, and by wall-clock rounds only as confirmation.

``--profile`` drains with a ``run_once`` loop on this thread instead (cProfile sees
one thread) under cProfile on ``time.process_time`` and prints the programma_sa
functions by ``--sort``.

The script also prints the cyclic garbage collections during the drain, by
generation, and the CPU time in them per job: the objects a drain keeps per held
job (until its batch is written) decide how often the collector runs, and a full
collection walks the whole heap.

To compare with an older checkout, copy this file into its ``benchmarks/`` and run it
there, with that tree first on the path (the helpers it imports exist since the
drain workloads do)::

    cd /tmp/old && PYTHONPATH=/tmp/old python -m benchmarks.drain_cpu --max-jobs 100
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import time
from collections.abc import Sequence

import psycopg

from benchmarks import baseline
from benchmarks.harness import DEFAULT_ADMIN_URL, TOPIC, RunContext, Sizes
from benchmarks.workloads.worker import _ready_worker, handler_worker, warmup_topic

_WARMUP = 200


def _max_jobs(text: str) -> int | None:
    return None if text == "auto" else int(text)


class _Collections:
    """The garbage collections while it is on: a count per generation, and the
    process CPU time spent in them."""

    def __init__(self) -> None:
        self.counts = [0, 0, 0]
        self.cpu = 0.0
        self._started = 0.0
        self._on = False

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if not self._on:
            return
        if phase == "start":
            self._started = time.process_time()
        else:
            self.counts[info["generation"]] += 1
            self.cpu += time.process_time() - self._started

    def __enter__(self) -> _Collections:
        gc.callbacks.append(self)
        self._on = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._on = False
        gc.callbacks.remove(self)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.drain_cpu")
    parser.add_argument("--max-jobs", type=_max_jobs, default=100, help="a size or auto")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true", help="cProfile a run_once loop")
    parser.add_argument("--sort", default="tottime", help="pstats sort key (--profile)")
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL)
    args = parser.parse_args(argv)

    ctx = RunContext(args.database_url, Sizes())
    with ctx.database() as db:
        baseline.load_due_jobs(db.conninfo, TOPIC, args.jobs)
        baseline.load_due_jobs(db.conninfo, warmup_topic(0), _WARMUP)
        with psycopg.connect(db.conninfo, autocommit=True) as connection:
            connection.execute("VACUUM ANALYZE")
        engine, worker = _ready_worker(
            db.url, "lease", args.concurrency, args.max_jobs, 0, handler_worker
        )
        profile = cProfile.Profile(time.process_time) if args.profile else None
        with _Collections() as collections:
            cpu = time.process_time()
            wall = time.perf_counter()
            if profile is not None:
                profile.enable()
                done = 0
                while done < args.jobs:
                    done += worker.run_once().completed
                profile.disable()
            else:
                worker.start()
                while worker.totals.completed < args.jobs:
                    time.sleep(0.002)
            wall = time.perf_counter() - wall
            cpu = time.process_time() - cpu
        worker.stop()
        worker.join(60)
        engine.dispose()
    size = "auto" if args.max_jobs is None else args.max_jobs
    print(
        f"max_jobs {size}, concurrency {args.concurrency}, {args.jobs} jobs: "
        f"{args.jobs / wall:,.0f} jobs/s wall, client CPU {cpu / args.jobs * 1e6:.1f} us/job"
    )
    print(
        "garbage collections (generations 0/1/2): "
        f"{'/'.join(map(str, collections.counts))}, "
        f"{collections.cpu / args.jobs * 1e6:.1f} us/job of the CPU"
    )
    if profile is not None:
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out)
        stats.sort_stats(args.sort).print_stats("programma_sa", 40)
        print(out.getvalue())


if __name__ == "__main__":
    main()
