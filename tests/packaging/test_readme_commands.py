"""The README's commands, as a new user runs them: in a fresh virtualenv, from a clone.

1. The first command of the README — create a virtualenv, install from the clone,
   run the demo — runs as written (stock Debian/Ubuntu refuse a bare ``pip install``
   outside a virtualenv, PEP 668, so the README must not start with one).
2. The README's two ``programma-sa worker`` lines run the README's own code: the
   main path's ``myapp.jobs:tasks`` runs its task and ships the quickstart's order; the
   layer under it, ``myapp.jobs:ship …``, runs its handler (which writes through
   ``ctx.session``, so it needs transaction mode) and ships that section's order.

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


def worker_command(target: str) -> str:
    """The ``programma-sa worker`` line the README shows inline for ``MODULE:NAME``
    (shown once, or each time the same)."""
    [command] = {
        command
        for command in re.findall(r"`(programma-sa worker [^`]+)`", README.read_text())
        if command.split()[2] == target
    }
    return command


def python_blocks() -> list[str]:
    return [b.code for b in blocks(README) if b.language == "python"]


def block_with(text: str) -> str:
    """The README's one Python block that contains ``text``."""
    [block] = [code for code in python_blocks() if text in code]
    return block


def user_environment(**variables: str) -> dict[str, str]:
    """This environment as a user's shell has it: no virtualenv active (its ``bin``
    off ``PATH``), no ``$DATABASE_URL`` unless given."""
    ours = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != ours)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "DATABASE_URL")}
    return {**env, "PATH": path, **variables}


def readme_app(directory: Path) -> None:
    """``myapp/jobs.py`` as the README builds it: the models, the engine and the queue;
    the task registry and its task; and the handler ``ship`` of its handler block."""
    model = block_with("class Order(Base)")
    declared = block_with("@tasks.task")
    handler = block_with("def ship(")
    tree = ast.parse(handler)
    kept = [
        ast.get_source_segment(handler, node)
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
        or (isinstance(node, ast.FunctionDef) and node.name == "ship")
    ]
    package = directory / "myapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    source = "\n\n".join([model, declared, *filter(None, kept)])
    (package / "jobs.py").write_text(source + "\n")


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
        # The README's set-up and enqueue blocks: the jobs table, the orders table,
        # order 41 and its task's job, order 42 and its ship-order job, committed.
        setup_code = [
            "from myapp.jobs import *",
            block_with("migrations.upgrade("),
            block_with("ship_order.enqueue("),
            block_with('queue.add_job(session, "ship-order", {"order_id": 42})'),
        ]
        setup = subprocess.run(
            [str(venv_bin / "python"), "-c", "\n".join(setup_code)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert setup.returncode == 0, setup.stderr
        engine = create_engine(url)

        def shipped(order_id: int) -> bool:
            with engine.connect() as connection:
                return bool(
                    connection.scalar(
                        text("SELECT shipped FROM orders WHERE id = :id"), {"id": order_id}
                    )
                )

        def run_until_shipped(command: str, order_id: int) -> tuple[int, str]:
            """Run a worker command until the order ships (or it exits), then SIGTERM."""
            worker = subprocess.Popen(
                ["bash", "-c", command],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                eventually(lambda: worker.poll() is not None or shipped(order_id), timeout=60)
                worker.send_signal(signal.SIGTERM)
                output, _ = worker.communicate(timeout=60)
            finally:
                worker.kill()
            return worker.returncode, output

        try:
            for target, order_id in [("myapp.jobs:tasks", 41), ("myapp.jobs:ship", 42)]:
                assert not shipped(order_id)  # each worker line ships its own order
                returncode, output = run_until_shipped(worker_command(target), order_id)
                assert returncode == 0, output
                assert shipped(order_id), output
        finally:
            engine.dispose()
