"""Every URL form through every ``programma-sa`` command, as a user runs them (subprocesses).

``postgresql+asyncpg://`` (FastAPI's usual URL) used to break ``migrate``, ``enqueue``,
``stats`` and ``demo`` with "greenlet_spawn has not been called", ``postgres://``
failed in the library, and a driver that is not installed was a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from programma_sa import JobQueue, JobState
from programma_sa.testing import fresh_database

from ..app import Job
from ..workers.support import blocking_wait_for, get_job
from .forms import FORMS, in_form

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60


def programma_sa(*argv: str, url: str) -> subprocess.CompletedProcess[str]:
    """``programma-sa ARGV`` with ``$DATABASE_URL`` set to ``url``."""
    return python("-m", "programma_sa", *argv, url=url)


def python(*argv: str, url: str) -> subprocess.CompletedProcess[str]:
    """``python ARGV`` with ``$DATABASE_URL`` set to ``url``, from the project's root."""
    return subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@pytest.fixture
def empty_database(admin_url: str) -> Iterator[str]:
    with fresh_database(admin_url, prefix="programma_urls") as url:
        yield url


@pytest.mark.parametrize("form", FORMS)
def test_every_command_takes_the_url_in_every_form(form: str, empty_database: str) -> None:
    url = in_form(empty_database, form)

    migrated = programma_sa("migrate", url=url)
    assert migrated.returncode == 0, migrated.stderr
    enqueued = programma_sa("enqueue", "urls", "--data", '{"form": "x"}', url=url)
    assert enqueued.returncode == 0, enqueued.stderr
    job_id = enqueued.stdout.strip()
    shown = programma_sa("job", job_id, url=url)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["data"] == {"form": "x"}
    stats = programma_sa("stats", "--json", "--topic", "urls", url=url)
    assert stats.returncode == 0, stats.stderr
    [topic] = json.loads(stats.stdout)["topics"]
    assert (topic["topic"], topic["created"]) == ("urls", 1)
    pruned = programma_sa("prune", "--completed-ttl", "0", url=url)
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.startswith("pruned 0 finished jobs")


@pytest.mark.parametrize(
    "handler", ["tests.worker.handlers:slow", "tests.asyncio_worker.handlers:slow"]
)
@pytest.mark.parametrize("form", FORMS)
def test_the_worker_takes_the_url_in_every_form(
    form: str, handler: str, empty_database: str
) -> None:
    """A sync handler runs on a sync engine, an ``async def`` one on an async engine,
    whatever driver the URL names."""
    url = in_form(empty_database, form)
    engine = create_engine(empty_database)
    queue = JobQueue(Job)
    try:
        assert programma_sa("migrate", url=url).returncode == 0
        with Session(engine) as session, session.begin():
            job_id = queue.add_job(session, "urls", {})
        worker = subprocess.Popen(
            [sys.executable, "-m", "programma_sa", "worker", handler, "--topic", "urls"],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": url},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            blocking_wait_for(
                lambda: (
                    worker.poll() is not None
                    or get_job(engine, queue, job_id).state is JobState.COMPLETED
                ),
                timeout=30,
            )
            worker.send_signal(signal.SIGTERM)
            output, _ = worker.communicate(timeout=TIMEOUT)
        finally:
            worker.kill()
        assert worker.returncode == 0, output
        assert get_job(engine, queue, job_id).state is JobState.COMPLETED, output
    finally:
        engine.dispose()


@pytest.mark.parametrize("form", ["heroku", "asyncpg"])
@pytest.mark.postgresql_only("PostgreSQL's URL forms")
def test_the_demo_takes_the_url_in_the_forms_it_refused(form: str, database_url: str) -> None:
    demo = programma_sa("demo", url=in_form(database_url, form))
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "Demo finished" in demo.stdout


def _without(module: str, *argv: str, url: str) -> subprocess.CompletedProcess[str]:
    """``programma-sa ARGV`` in a process where ``import MODULE`` fails."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules[{module!r}] = None  # `import {module}` now raises ImportError
        from programma_sa.cli import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    return python("-c", script, *argv, url=url)


@pytest.mark.parametrize(
    "argv",
    [["migrate"], ["stats"], ["enqueue", "t", "--data", "{}"], ["demo"]],
    ids=lambda argv: argv[0],
)
def test_a_driver_that_is_not_installed_is_one_line_and_exit_1(
    argv: list[str], database_url: str
) -> None:
    result = _without("psycopg2", *argv, url=in_form(database_url, "psycopg2"))
    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        "programma-sa: error: postgresql+psycopg2://… needs the psycopg2 package, which is "
        "not installed: pip install psycopg2-binary, or use postgresql+psycopg:// "
        "(psycopg 3, installed with programma-sa)\n"
    )


def test_an_async_handler_without_greenlet_is_one_line_and_exit_1(database_url: str) -> None:
    result = _without(
        "greenlet",
        "worker",
        "tests.asyncio_worker.handlers:slow",
        "--topic",
        "t",
        url=in_form(database_url, "asyncpg"),
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        "programma-sa: error: asyncio needs the greenlet package, which is not installed: "
        'pip install greenlet (the "asyncio" extra)\n'
    )
