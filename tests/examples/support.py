"""Running the commands the integrations guide shows, as it shows them.

Every shell command in ``docs/integrations.md`` is run by a test through
:func:`documented`, which first checks that the guide still shows it verbatim — so
the guide cannot drift from what is tested.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "integrations.md"
#: The bound on any one command; the tests' commands take a second or two.
COMMAND_TIMEOUT = 60.0


def documented(command: str) -> str:
    """``command``, after checking that the guide shows it (a line of a shell block)."""
    shown = [line.strip() for line in GUIDE.read_text().splitlines()]
    assert command in shown, f"docs/integrations.md no longer shows: {command}"
    return command


def argv(command: str) -> list[str]:
    """The command's words, its program taken from this interpreter's environment."""
    words = shlex.split(command)
    program = Path(sys.executable).with_name(words[0])
    assert program.exists(), f"{words[0]} is not installed beside {sys.executable}"
    return [str(program), *words[1:]]


def environment(**variables: str) -> dict[str, str]:
    return {**os.environ, **variables}


def run(command: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a command from the repository root (as the guide does) and wait for it."""
    return run_argv(argv(command), env)


def run_argv(args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=REPO,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def listening(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host:port`` (a quick probe)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def eventually(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def wait_until(condition: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    """Poll ``condition`` until it holds; fail with ``what()`` after ``timeout`` seconds."""
    if not eventually(condition, timeout):
        raise AssertionError(f"not within {timeout:.0f} s: {what()}")


@contextmanager
def background(command: str, env: Mapping[str, str], log: Path) -> Iterator[subprocess.Popen[str]]:
    """Run a long-lived command with its output in ``log``; always stop it on exit.

    SIGTERM first (a graceful stop for both Celery and ``programma-sa worker``),
    SIGKILL if it has not exited 15 s later.
    """
    with log.open("w") as output:
        process = subprocess.Popen(
            argv(command),
            cwd=REPO,
            env=dict(env),
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=15)
