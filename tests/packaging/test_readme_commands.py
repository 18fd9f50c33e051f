"""The README's commands, as a new user runs them: in a fresh virtualenv, from a clone.

1. The first command of the README — create a virtualenv, install from the clone,
   run the demo — runs as written (stock Debian/Ubuntu refuse a bare ``pip install``
   outside a virtualenv, PEP 668, so the README must not start with one).
2. The README's ``programma-sa worker myapp.jobs:ship …`` line runs the README's own
   handler (which writes through ``ctx.session``, so it needs transaction mode) and
   ships the README's order.

Bounded: pip resolves from the index with pip's cache (about 20 s warm); each step
has a timeout.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from programma_sa.testing import fresh_database

from ..docs.test_code_blocks import blocks
from ..examples.support import eventually

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
#: What a clone holds that a copy of this working tree must leave out.
NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".venv*", ".git", "site", "__pycache__", "*.egg-info", ".*_cache"
)


def first_shell_command() -> str:
    """The README's first command: the one line of its first ``bash`` block."""
    [line] = next(b for b in blocks(README) if b.language == "bash").code.splitlines()
    return line


def worker_command() -> str:
    """The ``programma-sa worker`` line the README shows inline."""
    [command] = re.findall(r"`(programma-sa worker [^`]+)`", README.read_text())
    return command


def python_blocks() -> list[str]:
    return [b.code for b in blocks(README) if b.language == "python"]


def user_environment(**variables: str) -> dict[str, str]:
    """This environment as a user's shell has it: no virtualenv active (its ``bin``
    off ``PATH``), no ``$DATABASE_URL`` unless given."""
    ours = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != ours)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "DATABASE_URL")}
    return {**env, "PATH": path, **variables}


def readme_app(directory: Path) -> None:
    """``myapp/jobs.py`` as the README builds it: its first block (the models, the
    engine, the queue) and the handler ``ship`` of its worker block."""
    model, _, _, worker, *_ = python_blocks()
    tree = ast.parse(worker)
    kept = [
        ast.get_source_segment(worker, node)
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
        or (isinstance(node, ast.FunctionDef) and node.name == "ship")
    ]
    package = directory / "myapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "jobs.py").write_text(model + "\n\n" + "\n\n".join(filter(None, kept)) + "\n")


@pytest.fixture
def readable_tmp_path() -> Iterator[Path]:
    """A temporary directory others may read: run as root, the embedded PostgreSQL
    runs as the system user ``pgserver``, which must reach the venv's server binaries
    (pytest's own ``tmp_path`` is private to its user)."""
    with tempfile.TemporaryDirectory(prefix="programma-readme-") as directory:
        path = Path(directory)
        path.chmod(0o755)
        yield path


def test_the_readme_commands_work_in_a_fresh_virtualenv(
    readable_tmp_path: Path, admin_url: str
) -> None:
    tmp_path = readable_tmp_path
    clone = tmp_path / "programma_sa"
    shutil.copytree(ROOT, clone, ignore=NOT_IN_A_CLONE)
    command = first_shell_command()
    assert command.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install")

    demo = subprocess.run(
        ["bash", "-c", command],
        cwd=clone,
        env=user_environment(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "Demo finished" in demo.stdout

    venv_bin = clone / ".venv" / "bin"
    readme_app(tmp_path)
    with fresh_database(admin_url, prefix="programma_readme") as url:
        env = user_environment(DATABASE_URL=url, PATH=f"{venv_bin}{os.pathsep}")
        env["PATH"] += user_environment()["PATH"]
        # The README's blocks 2 and 3: the jobs table, the orders table, order 42 and
        # its ship-order job, committed.
        _, migrate, enqueue, *_ = python_blocks()
        setup = subprocess.run(
            [
                str(venv_bin / "python"),
                "-c",
                "\n".join(["from myapp.jobs import *", migrate, enqueue]),
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert setup.returncode == 0, setup.stderr
        engine = create_engine(url)
        try:
            worker = subprocess.Popen(
                ["bash", "-c", worker_command()],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:

                def shipped() -> bool:
                    with engine.connect() as connection:
                        return bool(
                            connection.scalar(text("SELECT shipped FROM orders WHERE id = 42"))
                        )

                eventually(lambda: worker.poll() is not None or shipped(), timeout=60)
                worker.send_signal(signal.SIGTERM)
                output, _ = worker.communicate(timeout=60)
            finally:
                worker.kill()
            assert worker.returncode == 0, output
            assert shipped(), output
        finally:
            engine.dispose()
