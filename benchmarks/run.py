"""The benchmark command: run the workloads, print a markdown table, write JSON.

::

    python -m benchmarks.run                       # everything, 3 rounds, local server
    python -m benchmarks.run --quick               # tiny sizes, 1 round (the CI smoke run)
    python -m benchmarks.run --only drain enqueue.bulk --json out.json
    python -m benchmarks.run --database-url postgresql+psycopg://u@host/db
    python -m benchmarks.run --embedded            # PostgreSQL from the pgserver wheel

``--only`` takes workload keys or key prefixes (``drain`` selects every drain
workload); the baselines the selected workloads are compared with are added. The
server given by ``--database-url`` (default ``$PROGRAMMA_BENCH_DATABASE_URL``, else
the local ``postgres`` on 127.0.0.1:5432) needs the right to create databases:
every run of every workload gets a fresh one, dropped afterwards.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import create_engine, text

from .harness import DEFAULT_ADMIN_URL, Figure, Report, RunContext, Sizes, Workload, machine_meta
from .workloads import all_workloads

URL_ENV = "PROGRAMMA_BENCH_DATABASE_URL"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0]
    )
    server = parser.add_mutually_exclusive_group()
    server.add_argument(
        "--database-url",
        default=os.environ.get(URL_ENV, DEFAULT_ADMIN_URL),
        help=f"admin SQLAlchemy URL of the server (default: ${URL_ENV} or {DEFAULT_ADMIN_URL})",
    )
    server.add_argument(
        "--embedded", action="store_true", help="start an embedded PostgreSQL (pgserver wheel)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="workload keys or prefixes to run"
    )
    parser.add_argument("--rounds", type=int, help="runs per workload (default 3; 1 with --quick)")
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def select(workloads: list[Workload], only: Sequence[str] | None) -> list[Workload]:
    """The workloads named by ``only`` (keys or prefixes) and, transitively, their baselines."""
    if not only:
        return workloads
    by_key = {workload.key: workload for workload in workloads}

    def matches(key: str, name: str) -> bool:
        return key == name or key.startswith(name.rstrip(".") + ".")

    chosen = {key for key in by_key for name in only if matches(key, name)}
    unknown = [name for name in only if not any(matches(key, name) for key in by_key)]
    if unknown:
        raise SystemExit(f"no workload matches {unknown}; see --list")
    pending = list(chosen)
    while pending:
        baseline = by_key[pending.pop()].baseline
        if baseline is not None and baseline not in chosen:
            chosen.add(baseline)
            pending.append(baseline)
    return [workload for workload in workloads if workload.key in chosen]


def _not_runnable(workload: Workload) -> tuple[str, str] | None:
    if workload.pending is not None:
        return "pending", workload.pending
    missing = [name for name in workload.requires if importlib.util.find_spec(name) is None]
    if missing:
        return "skipped", (f"{', '.join(missing)} not installed (pip install -e '.[bench]')")
    return None


@contextmanager
def server(args: argparse.Namespace) -> Iterator[str]:
    if args.embedded:
        from programma_sa._embedded import embedded_postgres

        with embedded_postgres() as embedded:
            yield embedded.url
    else:
        yield args.database_url


def _server_version(admin_url: str) -> str:
    engine = create_engine(admin_url)
    try:
        with engine.connect() as connection:
            return str(connection.execute(text("SHOW server_version")).scalar_one())
    finally:
        engine.dispose()


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(workloads: list[Workload], ctx: RunContext, rounds: int) -> dict[str, Figure]:
    """Each runnable workload once per round; a workload that fails is not run again."""
    figures: dict[str, Figure] = {}
    runnable: list[Workload] = []
    for workload in workloads:
        blocked = _not_runnable(workload)
        for metric in workload.metrics:
            figure = Figure(f"{workload.key}.{metric.name}", workload, metric)
            if blocked is not None:
                figure.status, figure.note = blocked
            figures[figure.key] = figure
        if blocked is None:
            runnable.append(workload)
    failed: set[str] = set()
    for round_number in range(1, rounds + 1):
        for workload in runnable:
            if workload.key in failed:
                continue
            started = time.perf_counter()
            try:
                values = workload.run(ctx)
                for metric in workload.metrics:
                    figures[f"{workload.key}.{metric.name}"].runs.append(values[metric.name])
            except Exception as error:
                failed.add(workload.key)
                traceback.print_exc(file=sys.stderr)
                for metric in workload.metrics:
                    figure = figures[f"{workload.key}.{metric.name}"]
                    figure.status, figure.note = "error", f"{type(error).__name__}: {error}"
                _log(f"[round {round_number}/{rounds}] {workload.key}: FAILED ({error})")
                continue
            shown = ", ".join(
                f"{metric.name}={values[metric.name]:,.2f}" for metric in workload.metrics
            )
            elapsed = time.perf_counter() - started
            _log(f"[round {round_number}/{rounds}] {workload.key}: {shown} ({elapsed:.1f} s)")
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workloads = select(all_workloads(), args.only)
    if args.list:
        for workload in workloads:
            blocked = _not_runnable(workload)
            state = "" if blocked is None else f"  [{blocked[0]}: {blocked[1]}]"
            print(f"{workload.key}  —  {workload.title}{state}")
        return 0
    sizes = Sizes.quick() if args.quick else Sizes()
    meta = machine_meta()
    started = time.perf_counter()
    with server(args) as admin_url:
        meta["server_version"] = _server_version(admin_url)
        ctx = RunContext(admin_url=admin_url, sizes=sizes)
        figures = run(workloads, ctx, args.rounds)
    meta.update(
        quick=args.quick,
        embedded=args.embedded,
        sizes=dataclasses.asdict(sizes),
        load_average_at_end=list(os.getloadavg()),
        elapsed_s=round(time.perf_counter() - started, 1),
    )
    report = Report(figures=figures, sizes=sizes, rounds=args.rounds, meta=meta)
    report.compute_ratios()
    print(
        f"PostgreSQL {meta['server_version']}, Python {meta['python']}, {meta['cpus']} CPUs; "
        f"median of {args.rounds} rounds{' (--quick sizes)' if args.quick else ''}; "
        f"load average {meta['load_average_at_start'][0]:.2f} at start, "
        f"{meta['load_average_at_end'][0]:.2f} at end; {meta['elapsed_s']} s.\n"
    )
    print(report.markdown())
    if args.json:
        report.write_json(args.json)
        _log(f"wrote {args.json}")
    return 1 if any(figure.status == "error" for figure in figures.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
