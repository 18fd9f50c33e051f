"""Scale: the cost of one claim with 0, 100,000 and 1,000,000 finished rows present.

Finished (COMPLETED) rows are bulk-loaded with one ``INSERT … SELECT
generate_series`` in the same topic as the due jobs (the harder case: a claim
whose index did not exclude them would have to step over them), then the table is
``VACUUM ANALYZE``-d, as autovacuum would leave it in steady state. Each timed claim
is ``claim_jobs(max_jobs=1)`` on its own, inside a transaction that then completes
the job and commits (off the clock). The figure is the median time of one claim
(the median, not the mean: a claim that waited on the shared machine's CPU says
nothing about the table), and its ratio to the empty table: the partial claim index
should keep it flat.

``benchmarks/scale_finished_rows.py`` (the operations guide's check) measures the
same thing as claim + complete per transaction, with the table sizes interleaved
within one run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from sqlalchemy.orm import sessionmaker

from programma_sa import JobQueue

from .. import baseline
from ..app import Job
from ..harness import CLAIM_MS, TOPIC, RunContext, RunFunction, Sizes, Workload

_WARMUP = 10


def _finished_rows(sizes: Sizes, level: int) -> int:
    return 0 if level == 0 else sizes.scale_finished[level - 1]


def claim_cost(level: int) -> RunFunction:
    def run(ctx: RunContext) -> dict[str, float]:
        sizes = ctx.sizes
        claims = sizes.scale_claims
        queue = JobQueue(Job)
        with ctx.database() as db:
            finished = _finished_rows(sizes, level)
            if finished:
                baseline.load_finished_jobs(db.conninfo, TOPIC, finished)
            baseline.load_due_jobs(db.conninfo, TOPIC, max(sizes.scale_due, claims + _WARMUP))
            baseline.vacuum_analyze(db.conninfo)
            engine = db.engine()
            try:
                sessions = sessionmaker(engine)
                timings: list[float] = []
                for n in range(-_WARMUP, claims):
                    with sessions.begin() as session:
                        start = time.perf_counter()
                        claimed = queue.claim_jobs(session, TOPIC, max_jobs=1)
                        if n >= 0:
                            timings.append(time.perf_counter() - start)
                        if len(claimed) != 1:
                            raise RuntimeError(f"claim #{n} returned {len(claimed)} jobs")
                        queue.move_job_to_done(session, claimed[0].id)
                return {"claim_ms": statistics.median(timings) * 1000}
            finally:
                engine.dispose()

    return run


EMPTY = "scale.claim.finished_0"
_KEYS = (EMPTY, "scale.claim.finished_100k", "scale.claim.finished_1m")


def _params(level: int) -> Callable[[Sizes], dict[str, object]]:
    return lambda sizes: {
        "finished_rows": _finished_rows(sizes, level),
        "due_jobs": max(sizes.scale_due, sizes.scale_claims + _WARMUP),
        "claims": sizes.scale_claims,
        "max_jobs": 1,
    }


WORKLOADS = [
    Workload(
        key,
        "claim, empty table (baseline)"
        if level == 0
        else f"claim, {key.rsplit('_', 1)[1]} finished rows",
        CLAIM_MS,
        claim_cost(level),
        baseline=None if level == 0 else EMPTY,
        params=_params(level),
    )
    for level, key in enumerate(_KEYS)
]
