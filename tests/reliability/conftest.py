"""Fixtures of the reliability suite (every test here is marked ``reliability``).

* ``scale`` / ``seed`` — run size and random seed (see :mod:`.scale`).
* ``figures`` — measured figures, printed in a "reliability figures" section at
  the end of the run (and copied by hand into ``docs/reliability.md``).
* ``private_database_url`` — a fresh, migrated database of the test's own, with the
  deliveries ledger: process-level tests may kill its backends without touching
  the session-wide engine of the other tests.
* ``owned_postgres`` — an embedded PostgreSQL server this module owns and may stop
  and start.

Tests marked ``soak`` are skipped unless ``PROGRAMMA_RELIABILITY_SCALE=full``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine

from programma_sa import migrations
from programma_sa._embedded import EmbeddedPostgres, embedded_postgres
from programma_sa.testing import fresh_database

from . import deliveries
from .scale import SCALE_ENV, Scale, current_scale, current_seed

_FIGURES = pytest.StashKey[list[tuple[str, dict[str, Any]]]]()


def pytest_configure(config: pytest.Config) -> None:
    try:  # a mistyped scale or seed stops the run before anything runs
        current_scale()
        current_seed()
    except ValueError as error:
        raise pytest.UsageError(str(error)) from error
    config.stash[_FIGURES] = []


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("soak") and not current_scale().soak:
        pytest.skip(f"soak run: set {SCALE_ENV}=full")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    figures = config.stash.get(_FIGURES, [])
    if not figures:
        return
    scale = current_scale()
    terminalreporter.section(f"reliability figures (scale {scale.name}, seed {current_seed()})")
    for name, values in figures:
        rendered = ", ".join(f"{key}={value}" for key, value in values.items())
        terminalreporter.write_line(f"{name}: {rendered}")


class Figures:
    """Collects ``name: key=value, ...`` lines for the end-of-run summary."""

    def __init__(self, sink: list[tuple[str, dict[str, Any]]]) -> None:
        self._sink = sink

    def add(self, name: str, **values: Any) -> None:
        self._sink.append((name, values))


@pytest.fixture(scope="session")
def scale() -> Scale:
    return current_scale()


@pytest.fixture(scope="session")
def seed() -> int:
    return current_seed()


@pytest.fixture
def rng(seed: int, request: pytest.FixtureRequest) -> random.Random:
    """A generator seeded by the run's seed and the test's name (replayable)."""
    return random.Random(f"{seed}:{request.node.nodeid}")


@pytest.fixture(scope="session")
def figures(pytestconfig: pytest.Config) -> Figures:
    return Figures(pytestconfig.stash[_FIGURES])


def _migrated_database(admin_url: str) -> Iterator[str]:
    with fresh_database(admin_url, prefix="programma_reliability") as url:
        migrations.upgrade(url)
        engine = create_engine(url)
        try:
            deliveries.create(engine)
        finally:
            engine.dispose()
        yield url


@pytest.fixture
def private_database_url(admin_url: str) -> Iterator[str]:
    yield from _migrated_database(admin_url)


@pytest.fixture
def private_engine(private_database_url: str) -> Iterator[Engine]:
    engine = create_engine(private_database_url, pool_pre_ping=True)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def owned_postgres() -> Iterator[EmbeddedPostgres]:
    with embedded_postgres() as server:
        yield server


@pytest.fixture
def owned_database_url(owned_postgres: EmbeddedPostgres) -> Iterator[str]:
    """A migrated database (with the ledger) on the server the test may restart."""
    yield from _migrated_database(owned_postgres.url)
