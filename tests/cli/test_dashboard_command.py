"""``programma-sa dashboard``: the dashboard served alone, end to end."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from programma_sa import JobQueue

from ..backends import ON_SQLITE
from .test_cli import run

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_dashboard_command_serves_the_pages(
    database_url: str, engine: Engine, queue: JobQueue
) -> None:
    with Session(engine) as session, session.begin():
        queue.add_job(session, "served-alone", {})
    # A password in the URL: the command's output and the pages must never show it.
    # PostgreSQL's test server trusts local connections, so one is planted; MariaDB
    # checks it (a planted one is refused: error 1045, the page a 500), so there it is
    # the test account's own — a word the pages show anyway ("programma"), so what
    # must not appear is the password as a URL shows it.
    url = make_url(database_url)
    if url.password is None:
        url = url.set(password="hunter2-secret")
    secret = f":{url.password}@"
    port = _free_port()
    script = shutil.which("programma-sa", path=str(Path(sys.executable).parent))
    assert script is not None
    server = subprocess.Popen(
        [script, "dashboard", "--port", str(port), "--read-only"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url.render_as_string(hide_password=False)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        banner = server.stderr.readline()
        assert f"at http://127.0.0.1:{port}/ (read-only)" in banner
        assert "***" in banner or ON_SQLITE  # a SQLite URL carries no password to mask
        assert secret not in banner
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for _ in range(300):
                try:
                    page = client.get("/")
                    break
                except httpx.ConnectError:
                    assert server.poll() is None, "the dashboard command exited"
                    time.sleep(0.1)  # uvicorn binds just after the banner
            assert page.status_code == 200
            assert '<tr data-topic="served-alone">' in page.text
            assert secret not in page.text
            assert url.get_backend_name() not in page.text  # no URL at all
            assert client.post("/actions/delete").status_code == 403  # read-only
    finally:
        server.terminate()
        server.communicate(timeout=30)


@pytest.mark.parametrize("port", ["0", "70000"])
def test_a_bad_port_is_refused(
    capsys: pytest.CaptureFixture[str], database_url: str, port: str
) -> None:
    status, _, err = run(capsys, "dashboard", "--database-url", database_url, "--port", port)
    assert status == 2
    assert f"--port must be between 1 and 65535, got {port}" in err
