"""How big the reliability runs are: ``PROGRAMMA_RELIABILITY_SCALE=ci|full``.

``ci`` (the default) is the bounded version every ``pytest`` run includes; it keeps
the whole reliability suite within a couple of minutes on a small shared machine.
``full`` is the size the reliability issue asks for, run by hand; it also enables
the tests marked ``soak``. The random choices of a run (which transactions roll
back, which worker is killed) come from ``PROGRAMMA_RELIABILITY_SEED``, printed in
the run's figures so a failure can be replayed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

SCALE_ENV = "PROGRAMMA_RELIABILITY_SCALE"
SEED_ENV = "PROGRAMMA_RELIABILITY_SEED"
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
    #: Crash test: jobs, claiming processes, threads per process, SIGKILLs.
    crash_jobs: int
    crash_workers: int
    crash_concurrency: int
    crash_kills: int
    #: Tests marked ``soak`` run only at this scale.
    soak: bool


SCALES = {
    "ci": Scale(
        name="ci",
        storm_transactions=1_000,
        storm_connections=4,
        state_machine_examples=60,
        state_machine_steps=40,
        crash_jobs=600,
        crash_workers=3,
        crash_concurrency=2,
        crash_kills=2,
        soak=False,
    ),
    "full": Scale(
        name="full",
        storm_transactions=10_000,
        storm_connections=8,
        state_machine_examples=1_000,
        state_machine_steps=100,
        crash_jobs=5_000,
        crash_workers=4,
        crash_concurrency=4,
        crash_kills=5,
        soak=True,
    ),
}


def current_scale() -> Scale:
    """The scale named by ``PROGRAMMA_RELIABILITY_SCALE`` (default ``ci``)."""
    name = os.environ.get(SCALE_ENV, "").strip().lower() or "ci"
    if name not in SCALES:
        raise ValueError(f"{SCALE_ENV} must be one of {', '.join(SCALES)}, got {name!r}")
    return SCALES[name]


def current_seed() -> int:
    """The seed of this run's random choices (``PROGRAMMA_RELIABILITY_SEED``)."""
    value = os.environ.get(SEED_ENV, "").strip()
    if not value:
        return DEFAULT_SEED
    try:
        return int(value)
    except ValueError as error:
        raise ValueError(f"{SEED_ENV} must be an integer, got {value!r}") from error
