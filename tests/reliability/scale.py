"""How big the reliability runs are: ``PROGRAMMA_RELIABILITY_SCALE=ci|full``.

``ci`` (the default) is the bounded version every ``pytest`` run includes; it keeps
the whole reliability suite within a couple of minutes on a small shared machine.
``full`` is the size the reliability issue asks for, run by hand; it also enables
the tests marked ``soak``. The random choices of a run (which transactions roll
back, which worker is killed) come from ``PROGRAMMA_RELIABILITY_SEED``, printed in
the run's figures so a failure can be replayed. ``PROGRAMMA_RELIABILITY_SOAK_JOBS``
sets the soak's size (default 1,000,000 jobs per mode) for a shorter run by hand.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

SCALE_ENV = "PROGRAMMA_RELIABILITY_SCALE"
SEED_ENV = "PROGRAMMA_RELIABILITY_SEED"
#: Overrides the soak's size (jobs per mode), e.g. for a shorter run by hand.
SOAK_JOBS_ENV = "PROGRAMMA_RELIABILITY_SOAK_JOBS"
DEFAULT_SEED = 20261128


@dataclass(frozen=True)
class Scale:
    """Sizes of one reliability run."""

    name: str
    #: Rollback storm: enqueue transactions (half rolled back) and connections.
    storm_transactions: int
    storm_connections: int
    #: State-machine property test: hypothesis examples and steps per example.
    state_machine_examples: int
    state_machine_steps: int
    #: Exactly once, no faults: jobs, Worker processes, concurrency of each.
    exact_jobs: int
    exact_workers: int
    exact_concurrency: int
    #: Crash test: jobs, Worker processes, concurrency of each, SIGKILLs.
    crash_jobs: int
    crash_workers: int
    crash_concurrency: int
    crash_kills: int
    #: Database faults (terminated backends, a server restart): jobs, Worker
    #: processes, concurrency of each.
    fault_jobs: int
    fault_workers: int
    fault_concurrency: int
    #: Soak (marked ``soak``): jobs through two Worker processes, per mode.
    soak_jobs: int
    #: Tests marked ``soak`` run only at this scale.
    soak: bool


SCALES = {
    "ci": Scale(
        name="ci",
        storm_transactions=1_000,
        storm_connections=4,
        state_machine_examples=60,
        state_machine_steps=40,
        exact_jobs=2_000,
        exact_workers=2,
        exact_concurrency=4,
        crash_jobs=600,
        crash_workers=3,
        crash_concurrency=2,
        crash_kills=2,
        fault_jobs=600,
        fault_workers=2,
        fault_concurrency=2,
        soak_jobs=1_000_000,
        soak=False,
    ),
    "full": Scale(
        name="full",
        storm_transactions=10_000,
        storm_connections=8,
        state_machine_examples=1_000,
        state_machine_steps=100,
        exact_jobs=20_000,
        exact_workers=4,
        exact_concurrency=8,
        crash_jobs=10_000,
        crash_workers=4,
        crash_concurrency=8,
        crash_kills=5,
        fault_jobs=5_000,
        fault_workers=4,
        fault_concurrency=4,
        soak_jobs=1_000_000,
        soak=True,
    ),
}


def current_scale() -> Scale:
    """The scale named by ``PROGRAMMA_RELIABILITY_SCALE`` (default ``ci``)."""
    name = os.environ.get(SCALE_ENV, "").strip().lower() or "ci"
    if name not in SCALES:
        raise ValueError(f"{SCALE_ENV} must be one of {', '.join(SCALES)}, got {name!r}")
    soak_jobs = os.environ.get(SOAK_JOBS_ENV, "").strip()
    if not soak_jobs:
        return SCALES[name]
    if not soak_jobs.isdigit() or int(soak_jobs) < 1:
        raise ValueError(f"{SOAK_JOBS_ENV} must be a positive integer, got {soak_jobs!r}")
    return dataclasses.replace(SCALES[name], soak_jobs=int(soak_jobs))


def current_seed() -> int:
    """The seed of this run's random choices (``PROGRAMMA_RELIABILITY_SEED``)."""
    value = os.environ.get(SEED_ENV, "").strip()
    if not value:
        return DEFAULT_SEED
    try:
        return int(value)
    except ValueError as error:
        raise ValueError(f"{SEED_ENV} must be an integer, got {value!r}") from error
