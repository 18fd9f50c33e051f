"""Fixtures of the application-project tests: a fresh database, and an ``alembic init``
project on it in each ``alembic.ini`` style (tests/migration/projects.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from programma_sa.testing import fresh_database

from .projects import INI_STYLES, IniStyle, Project, alembic_project


@pytest.fixture
def app_url(admin_url: str) -> Iterator[str]:
    """A fresh, empty database for one application project."""
    with fresh_database(admin_url, prefix="programma_app") as url:
        yield url


@pytest.fixture(params=INI_STYLES)
def each_style_project(request: pytest.FixtureRequest, tmp_path: Path, app_url: str) -> Project:
    """A fresh ``alembic init`` project on ``app_url``, once per ``alembic.ini`` style."""
    style: IniStyle = request.param
    return alembic_project(tmp_path / "app", app_url, style)


@pytest.fixture
def project(tmp_path: Path, app_url: str) -> Project:
    """A fresh ``alembic init`` project with the ``alembic.ini`` Alembic writes today."""
    return alembic_project(tmp_path / "app", app_url, "new")
