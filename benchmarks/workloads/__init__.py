"""Every workload, in the order the table shows them: enqueue, drain, latency, scale, tasks.

Peers (:mod:`benchmarks.peers`) and the Worker slots (:mod:`.worker`) sit in the
group of the workload they compare with, right after the library's own figures.
"""

from __future__ import annotations

from ..harness import Workload
from . import drain, enqueue, latency, mariadb, scale, sqlite, tasks, worker

__all__ = ["all_workloads"]

GROUPS = ("enqueue", "drain", "latency", "scale", "tasks")


def all_workloads() -> list[Workload]:
    from .. import peers

    workloads = [
        *enqueue.WORKLOADS,
        *drain.WORKLOADS,
        *latency.WORKLOADS,
        *worker.WORKLOADS,
        *sqlite.WORKLOADS,
        *mariadb.WORKLOADS,
        *scale.WORKLOADS,
        *tasks.WORKLOADS,
        *peers.WORKLOADS,
    ]
    keys = [workload.key for workload in workloads]
    duplicates = {key for key in keys if keys.count(key) > 1}
    if duplicates:
        raise RuntimeError(f"duplicate workload keys: {sorted(duplicates)}")
    # A stable sort: within a section, the order above (baselines, library, worker, peers).
    sections: list[str] = []
    for workload in workloads:
        if _section(workload) not in sections:
            sections.append(_section(workload))
    return sorted(
        workloads,
        key=lambda workload: (GROUPS.index(workload.group), sections.index(_section(workload))),
    )


def _section(workload: Workload) -> str:
    """Enqueue splits into single and bulk; every other group is one section."""
    if workload.group == "enqueue":
        return ".".join(workload.key.split(".")[:2])
    return workload.group
