"""The asyncio support installs and works from a clean virtualenv.

SQLAlchemy 2.1 no longer installs ``greenlet``, without which ``AsyncSession`` cannot
run. ``programma-sa[asyncio]`` must pull it in: this test lets pip resolve the real
dependencies of this source tree (from the package index, helped by pip's cache)
into an empty virtualenv, then runs an ``AsyncSession`` against the test database
with nothing but what got installed. It is deliberately not marked ``slow``: CI
runs it (about 10 s with a warm pip cache).

And ``import programma_sa`` itself must not need greenlet: a plain install (sync
only) imports the package, ``AsyncJobQueue`` included.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]

ASYNC_SCRIPT = textwrap.dedent(
    """
    import asyncio
    import sys
    from importlib.metadata import version

    import greenlet  # noqa: F401  (came with programma-sa[asyncio])
    import programma_sa
    from programma_sa import AsyncJobQueue, JobMixin
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
    from sqlalchemy.orm import DeclarativeBase

    # The installed wheel, not this source tree.
    assert "site-packages" in programma_sa.__file__, programma_sa.__file__


    class Base(DeclarativeBase):
        pass


    class Job(JobMixin, Base):
        pass


    async def main(url):
        engine = create_async_engine(url)
        async with engine.connect() as connection:
            assert await connection.scalar(select(1)) == 1
        queue = AsyncJobQueue(Job)
        async with AsyncSession(engine) as session:
            job_id = await queue.add_job(session, "clean-install", {"ok": True})
            job = await queue.get_job(session, job_id)
            assert job is not None and job.data == {"ok": True}
            await session.rollback()
        await engine.dispose()
        print("sqlalchemy", version("sqlalchemy"), "greenlet", version("greenlet"))


    asyncio.run(main(sys.argv[1]))
    """
)


@pytest.mark.postgresql_only("the clean install runs psycopg")
def test_asyncio_extra_installs_greenlet_and_runs_an_async_session(
    tmp_path: Path, database_url: str
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # The outer pip installs into the new environment (pip >= 22.3), which saves
    # bootstrapping pip into it; the dependencies are resolved as for any user.
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            f"{ROOT}[asyncio]",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr

    url = make_url(database_url).set(drivername="postgresql+psycopg")
    run = subprocess.run(
        # -I: no PYTHONPATH, no user site, not the current directory: only the venv.
        [str(python), "-I", "-c", ASYNC_SCRIPT, url.render_as_string(hide_password=False)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("sqlalchemy ")


IMPORT_WITHOUT_GREENLET = textwrap.dedent(
    """
    import sys

    sys.modules["greenlet"] = None  # any `import greenlet` now raises ImportError

    import programma_sa
    from programma_sa import AsyncJobQueue

    assert "sqlalchemy.ext.asyncio" not in sys.modules
    from tests.app import Job

    AsyncJobQueue(Job)
    try:
        import sqlalchemy.ext.asyncio  # noqa: F401
    except ImportError as error:
        assert "greenlet" in str(error), error
    else:
        raise SystemExit("greenlet was not blocked: the check proves nothing")
    """
)


def test_programma_sa_imports_without_greenlet() -> None:
    run = subprocess.run(
        [sys.executable, "-c", IMPORT_WITHOUT_GREENLET],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
