"""The benchmark harness, run end to end with tiny sizes so it cannot rot.

Asserts only that every workload ran (or is reported pending/skipped, as it should
be) and that every figure and ratio key is in the JSON — never a timing.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from benchmarks import claim_planning, pickup_breakdown, pressure, run
from benchmarks.workloads import all_workloads


def _installed(modules: tuple[str, ...]) -> bool:
    return all(importlib.util.find_spec(name) is not None for name in modules)


def test_quick_run_produces_every_figure_and_ratio(
    admin_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"

    assert run.main(["--quick", "--database-url", admin_url, "--json", str(out)]) == 0

    figures = json.loads(out.read_text())["figures"]
    table = capsys.readouterr().out
    for workload in all_workloads():
        for metric in workload.metrics:
            figure = figures[f"{workload.key}.{metric.name}"]
            if workload.pending is not None:
                assert figure["status"] == "pending"
                continue
            if not _installed(workload.requires):
                assert figure["status"] == "skipped"
                assert "not installed" in figure["note"]
                continue
            assert figure["status"] == "ok", figure["note"]
            assert len(figure["runs"]) == 1
            assert figure["median"] > 0
            if workload.baseline is None:
                assert figure["ratio"] is None
            else:
                assert figure["baseline"] == f"{workload.baseline}.{metric.name}"
                assert figure["ratio"] > 0
        assert workload.title in table
    for group in ("enqueue", "drain", "latency", "scale"):
        assert f"### {group}" in table


def test_every_worker_workload_is_measured_not_pending() -> None:
    worker_keys = [
        workload.key
        for workload in all_workloads()
        if workload.key.startswith(("drain.worker.", "drain.async_worker.", "latency.worker."))
    ]

    # Lease and transaction mode, concurrency 1/4/16, one and two processes; the
    # like-for-like row; the drain over priorities; the AsyncWorker; pickup with
    # NOTIFY and polling only.
    assert len(worker_keys) == 12 + 1 + 1 + 1 + 2
    assert not [w.key for w in all_workloads() if w.key in worker_keys and w.pending]


def test_only_adds_the_baselines_of_what_it_selects() -> None:
    keys = [workload.key for workload in run.select(all_workloads(), ["drain.library"])]

    assert "drain.raw.batch1" in keys
    assert "drain.raw.batch100" in keys
    assert "drain.library.lease.batch100" in keys
    assert not [key for key in keys if key.startswith(("enqueue", "drain.worker"))]


def test_only_refuses_a_name_that_matches_nothing() -> None:
    with pytest.raises(SystemExit, match="no workload matches"):
        run.select(all_workloads(), ["drain.nothing"])


def test_pickup_breakdown_runs_every_variant(
    admin_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pickup_breakdown.main(["--database-url", admin_url, "--jobs", "5", "--rounds", "1"])

    table = capsys.readouterr().out
    for name in pickup_breakdown.VARIANTS:
        assert f"| {name} | " in table
    assert "Worker timeline" in table


def test_claim_planning_runs_the_claim_planned_once(
    admin_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    claim_planning.main(["--database-url", admin_url, "--claims", "5", "--rounds", "1"])

    rows = {
        line.split(" | ")[0].lstrip("| "): line.rstrip(" |").rsplit(" | ", 1)[1]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| raw") or line.startswith("| claim_jobs")
    }
    assert len(rows) == 3
    # The claim ran its generic plan once prepared; forced to plan each call, never.
    assert int(rows["claim_jobs, generic plan (planned once)"]) > 0
    assert rows["claim_jobs, planned every call (force_custom_plan)"] == "0"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--jobs", "0"], "--jobs and --rounds must be at least 1"),
        (["--rounds", "0"], "--jobs and --rounds must be at least 1"),
        (["--only", "nothing"], "no variant starts with ['nothing']"),
    ],
)
def test_pickup_breakdown_refuses_bad_arguments(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        pickup_breakdown.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_run_refuses_zero_rounds(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--rounds", "0"])
    assert exit_info.value.code == 2
    assert "--rounds must be at least 1" in capsys.readouterr().err


def test_pressure_runs_both_phases(admin_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    pressure.main(
        ["--database-url", admin_url, "--seconds", "1", "--rate", "100", "--readers", "1"]
    )

    table = capsys.readouterr().out
    assert "| clean | " in table
    assert "| pressured | " in table


@pytest.mark.parametrize(
    "argv", [["--seconds", "0"], ["--rate", "-1"], ["--readers", "0"], ["--reader-pause", "-1"]]
)
def test_pressure_refuses_bad_arguments(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        pressure.main(argv)
    assert exit_info.value.code == 2
    assert (
        "--seconds and --rate must be > 0, --readers >= 1, --reader-pause >= 0"
        in capsys.readouterr().err
    )
