"""``flask programma``: programma-sa's commands on the app's database and jobs table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FLASK = str(Path(sys.executable).with_name("flask"))


def flask_programma(app_url: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """``flask --app 'examples.flask_app.app:create_app(URL)' programma ARGV``, with no
    ``$DATABASE_URL``: the database is the app's."""
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    return subprocess.run(
        [FLASK, "--app", f"examples.flask_app.app:create_app({app_url!r})", "programma", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_commands_act_on_the_apps_database(flask_url: str) -> None:
    enqueued = flask_programma(flask_url, "enqueue", "send-welcome", "--data", '{"email": "x@y"}')
    assert enqueued.returncode == 0, enqueued.stderr
    job_id = enqueued.stdout.strip()

    shown = flask_programma(flask_url, "job", job_id)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["data"] == {"email": "x@y"}
    stats = flask_programma(flask_url, "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    assert [topic["topic"] for topic in json.loads(stats.stdout)["topics"]] == ["send-welcome"]


def test_help_lists_programma_sas_commands() -> None:
    result = flask_programma("postgresql+psycopg://unused@localhost/unused", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: flask programma ")
    for command in ("worker", "enqueue", "job", "stats", "prune", "migrate", "demo"):
        assert command in result.stdout


def test_bad_arguments_exit_2_naming_flask_programma(flask_url: str) -> None:
    result = flask_programma(flask_url, "enqueue", "t", "--data", "{oops")
    assert result.returncode == 2
    assert "usage: flask programma enqueue" in result.stderr
    assert "--data is not valid JSON" in result.stderr


def test_a_database_error_is_one_line_naming_flask_programma() -> None:
    unreachable = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    result = flask_programma(unreachable, "stats")
    assert result.returncode == 1
    assert result.stderr.startswith("flask programma: error: ")
    assert "Traceback" not in result.stderr


def test_the_worker_refuses_an_async_handler(flask_url: str) -> None:
    result = flask_programma(
        flask_url, "worker", "tests.asyncio_worker.handlers:slow", "--topic", "send-welcome"
    )
    assert result.returncode == 2
    assert (
        "tests.asyncio_worker.handlers:slow is an async def handler: flask programma worker "
        "runs sync handlers (run it with programma-sa worker)"
    ) in result.stderr
