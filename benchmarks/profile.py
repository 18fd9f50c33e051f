"""Profile the hot paths — enqueue, claim, complete — and say where the time goes.

::

    python -m benchmarks.profile [enqueue|claim|complete|bulk ...] [--ops 500] [--top 12]

For each path it runs the library operation ``--ops`` times on a fresh migrated
database under :mod:`cProfile` and prints:

* wall time per operation, beside the same work done with hand-written SQL on raw
  psycopg (the baseline's statements), so the library's overhead is one subtraction;
* statements sent per operation, and the SQLAlchemy compiled-cache status of each
  (``CACHE_HIT`` is what we want; ``CACHE_MISS`` after warm-up would mean a
  statement is rebuilt per call);
* the profile's own time grouped by package (PostgreSQL round trips show up as
  ``psycopg``'s wait), and the top functions by own time.

The paths:

* **enqueue** — one transaction: an ORM business row + ``add_job`` + commit;
* **claim** — one transaction: ``claim_jobs(max_jobs=100)`` + commit;
* **complete** — one transaction: ``move_job_to_done`` for each of 100 claimed jobs
  + commit (raw reference: one ``UPDATE … WHERE id = ANY(%s)``);
* **bulk** — one transaction: ``add_jobs`` of 20,000 jobs + commit (raw reference:
  one ``INSERT … SELECT FROM unnest(%s::text[])``), ``--ops / 100`` times.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import json
import os
import pstats
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import sessionmaker

from programma_sa import JobQueue, JobSpec

from . import baseline
from .app import Job, Order
from .harness import DEFAULT_ADMIN_URL, TOPIC, Database, RunContext, Sizes
from .run import URL_ENV

_BATCH = 100
_BULK = 20_000
_WARMUP = 5


@dataclass
class Measured:
    ops: int
    library_per_op: float
    #: seconds per operation of each hand-written reference
    references: dict[str, float]
    statements_per_op: float
    cache: Counter[str]
    stats: pstats.Stats


Op = Callable[[], None]


@contextmanager
def _statement_log(engine: Engine) -> Iterator[list[tuple[str, str]]]:
    """Every statement the engine sends: (its first word, compiled-cache status)."""
    log: list[tuple[str, str]] = []

    def record(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        status = getattr(getattr(context, "cache_hit", None), "name", "raw")
        log.append((statement.split(None, 1)[0].upper(), status))

    event.listen(engine, "after_cursor_execute", record)
    try:
        yield log
    finally:
        event.remove(engine, "after_cursor_execute", record)


def _measure(
    engine: Engine, ops: int, library: Op, references: dict[str, Op], warmup: int = _WARMUP
) -> Measured:
    """Time ``library`` and each reference interleaved, then profile ``library`` alone.

    Interleaving puts both in the same table state (the dead index entries a queue
    table accumulates between vacuums) and the same machine noise. The profiled pass
    is separate because cProfile slows Python code several times over.
    """
    ordered = {"library": library, **references}
    for _ in range(warmup):
        for op in ordered.values():
            op()
    seconds = dict.fromkeys(ordered, 0.0)
    for _ in range(ops):
        for name, op in ordered.items():
            start = time.perf_counter()
            op()
            seconds[name] += time.perf_counter() - start
    profiler = cProfile.Profile()
    with _statement_log(engine) as log:
        profiler.enable()
        for _ in range(ops):
            library()
        profiler.disable()
    return Measured(
        ops=ops,
        library_per_op=seconds.pop("library") / ops,
        references={name: total / ops for name, total in seconds.items()},
        statements_per_op=len(log) / ops,
        cache=Counter(f"{verb} {status}" for verb, status in log),
        stats=pstats.Stats(profiler),
    )


def _jobs_needed(ops: int) -> int:
    """Due jobs for 3 passes of ``ops`` batches (timed library, timed raw, profiled) + warm-up."""
    return 3 * (ops + _WARMUP) * _BATCH


# -- the three paths ------------------------------------------------------------------


def profile_enqueue(
    db: Database, engine: Engine, conn: psycopg.Connection[Any], ops: int
) -> Measured:
    queue = JobQueue(Job)
    sessions = sessionmaker(engine)
    order_ids = itertools.count(1)

    def library() -> None:
        n = next(order_ids)
        with sessions.begin() as session:
            session.add(Order(id=n, note=f"order {n}"))
            queue.add_job(session, TOPIC, baseline.payload(n))

    insert_job = text(baseline.SESSION_INSERT_JOB)

    def session_text() -> None:
        n = next(order_ids)
        with sessions.begin() as session:
            session.add(Order(id=n, note=f"order {n}"))
            session.execute(insert_job, {"topic": TOPIC, "data": json.dumps(baseline.payload(n))})

    def raw() -> None:
        n = next(order_ids)
        conn.execute(baseline.RAW_INSERT_ORDER, (n, f"order {n}"))
        conn.execute(baseline.RAW_INSERT_JOB, (TOPIC, json.dumps(baseline.payload(n))))
        conn.commit()

    quiet = JobQueue(Job, notify=False)

    def library_no_notify() -> None:
        n = next(order_ids)
        with sessions.begin() as session:
            session.add(Order(id=n, note=f"order {n}"))
            quiet.add_job(session, TOPIC, baseline.payload(n))

    references = {
        "add_job, notify=False": library_no_notify,
        "Session + text() INSERT": session_text,
        "raw psycopg": raw,
    }
    return _measure(engine, ops, library, references)


def profile_claim(
    db: Database, engine: Engine, conn: psycopg.Connection[Any], ops: int
) -> Measured:
    queue = JobQueue(Job)
    sessions = sessionmaker(engine)
    baseline.load_due_jobs(db.conninfo, TOPIC, _jobs_needed(ops))
    baseline.vacuum_analyze(db.conninfo)

    def library() -> None:
        with sessions.begin() as session:
            if len(queue.claim_jobs(session, TOPIC, max_jobs=_BATCH)) != _BATCH:
                raise RuntimeError("ran out of due jobs")

    def raw() -> None:
        conn.execute(baseline.RAW_CLAIM, (TOPIC, _BATCH)).fetchall()
        conn.commit()

    return _measure(engine, ops, library, {"raw psycopg": raw})


def profile_complete(
    db: Database, engine: Engine, conn: psycopg.Connection[Any], ops: int
) -> Measured:
    queue = JobQueue(Job)
    sessions = sessionmaker(engine)
    baseline.load_due_jobs(db.conninfo, TOPIC, _jobs_needed(ops))
    baseline.vacuum_analyze(db.conninfo)
    # Claim everything up front (untimed); each operation completes the next 100.
    claimed = [row[0] for row in conn.execute(baseline.RAW_CLAIM, (TOPIC, _jobs_needed(ops)))]
    conn.commit()
    batches = iter([claimed[i : i + _BATCH] for i in range(0, len(claimed), _BATCH)])

    def library() -> None:
        with sessions.begin() as session:
            for job_id in next(batches):
                queue.move_job_to_done(session, job_id)

    def raw() -> None:
        conn.execute(baseline.RAW_COMPLETE, (next(batches),))
        conn.commit()

    return _measure(engine, ops, library, {"raw psycopg, one UPDATE ... = ANY": raw})


def profile_bulk(db: Database, engine: Engine, conn: psycopg.Connection[Any], ops: int) -> Measured:
    """``add_jobs`` of ``_BULK`` jobs per operation; ``ops // 100`` (at least 2) operations."""
    queue = JobQueue(Job)
    sessions = sessionmaker(engine)

    def library() -> None:
        with sessions.begin() as session:
            queue.add_jobs(session, TOPIC, [JobSpec(baseline.payload(n)) for n in range(_BULK)])

    def raw() -> None:
        baseline.insert_unnest(conn, TOPIC, _BULK)
        conn.commit()

    references = {"raw psycopg INSERT ... unnest": raw}
    return _measure(engine, max(2, ops // 100), library, references, warmup=1)


PATHS: dict[str, Callable[[Database, Engine, psycopg.Connection[Any], int], Measured]] = {
    "enqueue": profile_enqueue,
    "claim": profile_claim,
    "complete": profile_complete,
    "bulk": profile_bulk,
}


# -- reporting ------------------------------------------------------------------------


def _package(filename: str) -> str:
    """Group a profiled function by the package its file belongs to."""
    if filename.startswith("<") or filename == "~":
        return "builtins (C calls: socket waits, json, uuid…)"
    parts = filename.replace(os.sep, "/").split("/")
    for marker in ("site-packages", "programma_sa", "benchmarks"):
        if marker in parts:
            index = parts.index(marker)
            return parts[index + 1] if marker == "site-packages" else marker
    return "stdlib"


def by_package(stats: pstats.Stats) -> list[tuple[str, float]]:
    totals: dict[str, float] = {}
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        package = _package(filename)
        totals[package] = totals.get(package, 0.0) + tottime
    return sorted(totals.items(), key=lambda item: item[1], reverse=True)


def top_functions(stats: pstats.Stats, count: int) -> list[tuple[float, int, str]]:
    rows = []
    for (filename, line, name), (_cc, calls, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        short = "/".join(filename.replace(os.sep, "/").split("/")[-2:])
        rows.append((tottime, calls, f"{short}:{line}({name})"))
    return sorted(rows, reverse=True)[:count]


def report(name: str, measured: Measured, top: int) -> str:
    ops = measured.ops
    library = measured.library_per_op
    lines = [
        f"## {name}",
        "",
        f"- library: {library * 1000:.3f} ms/op",
        *(
            f"- {reference}: {seconds * 1000:.3f} ms/op "
            f"(library throughput = {seconds / library:.2f}x this)"
            for reference, seconds in measured.references.items()
        ),
        f"- statements per op: {measured.statements_per_op:g} "
        f"({', '.join(f'{key}: {count / ops:g}/op' for key, count in measured.cache.items())})",
    ]
    packages = by_package(measured.stats)
    total = sum(seconds for _, seconds in packages)
    lines.append(
        "- profiled own time by package: "
        + ", ".join(
            f"{package} {seconds / total:.0%}"
            for package, seconds in packages
            if seconds / total >= 0.01
        )
    )
    lines += ["", "| own s | calls | function |", "|---:|---:|---|"]
    lines += [
        f"| {tottime:.3f} | {calls} | {function} |"
        for tottime, calls, function in top_functions(measured.stats, top)
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument("--database-url", default=os.environ.get(URL_ENV, DEFAULT_ADMIN_URL))
    parser.add_argument("--ops", type=int, default=500, help="operations per path and pass")
    parser.add_argument("--top", type=int, default=12, help="functions listed per path")
    parser.add_argument("paths", nargs="*", metavar="PATH", help=f"some of {', '.join(PATHS)}")
    args = parser.parse_args(argv)
    unknown = set(args.paths) - set(PATHS)
    if unknown:
        parser.error(f"unknown paths {sorted(unknown)}; choose from {', '.join(PATHS)}")
    ctx = RunContext(admin_url=args.database_url, sizes=Sizes())
    for name in args.paths or PATHS:
        with ctx.database() as db, psycopg.connect(db.conninfo) as conn:
            engine = db.engine()
            try:
                measured = PATHS[name](db, engine, conn, args.ops)
            finally:
                engine.dispose()
        print(report(name, measured, args.top), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
