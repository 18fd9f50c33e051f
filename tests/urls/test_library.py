"""Every URL form through the library: the worker's LISTEN URL, migrations, test helpers."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import Engine, create_engine, inspect, select, text
from sqlalchemy.orm import Session

from programma_sa import JobContext, JobQueue, JobState, Worker, migrations
from programma_sa.testing import fresh_database

from ..workers.support import blocking_wait_for, get_job
from .forms import FORMS, in_form


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.postgresql_only("PostgreSQL's URL forms")
def test_a_worker_listens_through_a_database_url_in_every_form(
    form: str, database_url: str, engine: Engine, queue: JobQueue
) -> None:
    handled: list[object] = []

    def handle(ctx: JobContext) -> None:
        handled.append(ctx.job.id)

    # A heartbeat of a minute: within the test's bound only a notification wakes it.
    worker = Worker(
        queue, engine, "urls", handle, heartbeat=60, database_url=in_form(database_url, form)
    )
    worker.start()
    try:
        listener = blocking_wait_for(lambda: worker.listener)
        assert listener.wait_listening(10)
        time.sleep(0.2)  # let the loop settle into its idle wait
        with Session(engine) as session, session.begin():
            job_id = queue.add_job(session, "urls", {})
        blocking_wait_for(
            lambda: get_job(engine, queue, job_id).state is JobState.COMPLETED, timeout=20
        )
    finally:
        worker.stop()
        worker.join(10)
    assert handled == [job_id]


def _current_database(url: str) -> str:
    """The database ``url`` connects to, through the driver it names."""
    if "+asyncpg" in url:
        from sqlalchemy.ext.asyncio import create_async_engine

        async def ask() -> str:
            engine = create_async_engine(url)
            try:
                async with engine.connect() as connection:
                    return str(await connection.scalar(select(text("current_database()"))))
            finally:
                await engine.dispose()

        return asyncio.run(ask())
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return str(connection.scalar(select(text("current_database()"))))
    finally:
        engine.dispose()


#: The scheme of the URL fresh_database yields, per form of the admin URL.
YIELDED = {
    "heroku": "postgresql+psycopg",
    "bare": "postgresql+psycopg",
    "psycopg": "postgresql+psycopg",
    "psycopg2": "postgresql+psycopg2",
    "asyncpg": "postgresql+asyncpg",
}


@pytest.mark.parametrize("form", FORMS)
def test_fresh_database_takes_an_admin_url_in_every_form(form: str, admin_url: str) -> None:
    with fresh_database(in_form(admin_url, form), prefix="programma_urls") as url:
        assert url.startswith(f"{YIELDED[form]}://")
        name = url.rpartition("/")[2].partition("?")[0]
        assert _current_database(url) == name
    assert name not in _databases(admin_url)


def _databases(admin_url: str) -> set[str]:
    engine = create_engine(admin_url)
    try:
        with engine.connect() as connection:
            return set(connection.scalars(text("SELECT datname FROM pg_database")))
    finally:
        engine.dispose()


@pytest.mark.parametrize("form", FORMS)
def test_migrations_upgrade_takes_a_url_in_every_form(form: str, admin_url: str) -> None:
    with fresh_database(admin_url, prefix="programma_urls") as url:
        migrations.upgrade(in_form(url, form))
        engine = create_engine(url)
        try:
            assert "programma_jobs" in inspect(engine).get_table_names()
        finally:
            engine.dispose()
