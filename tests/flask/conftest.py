"""A database per test module for the Flask example app: the jobs table (programma's
chain) and the app's ``signups`` table."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine

from examples.flask_app.models import Signup
from programma_sa import migrations
from programma_sa.testing import fresh_database


@pytest.fixture(scope="module")
def flask_url(admin_url: str) -> Iterator[str]:
    with fresh_database(admin_url, prefix="programma_flask") as url:
        migrations.upgrade(url)
        engine = create_engine(url)
        Signup.__table__.create(engine)
        engine.dispose()
        yield url
