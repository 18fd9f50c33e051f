"""The ``programma-sa`` command line, end to end against the test database."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from programma_sa import JobQueue
from programma_sa.cli import build_parser, main
from programma_sa.testing import fresh_database

from ..workers.support import all_completed, blocking_wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_ambient_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``main(argv)`` → (exit status, stdout, stderr); argparse's exits included."""
    try:
        status = main(list(argv))
    except SystemExit as exit_:
        status = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def test_enqueue_then_job_shows_it(
    capsys: pytest.CaptureFixture[str], database_url: str, engine: Engine, queue: JobQueue
) -> None:
    status, out, _ = run(
        capsys,
        "enqueue",
        "emails",
        "--data",
        '{"to": "ada@example.com"}',
        "--attributes",
        '{"tenant": 7}',
        "--run-after",
        "60",
        "--retry-after",
        "90",
        "--database-url",
        database_url,
    )
    assert status == 0
    job_id = uuid.UUID(out.strip())
    with Session(engine) as session:
        job = queue.get_job(session, job_id)
    assert job is not None and job.topic == "emails" and job.data == {"to": "ada@example.com"}
    assert job.attributes == {"tenant": 7} and job.retry_after_seconds == 90
    assert (job.start_after - job.created_at).total_seconds() == pytest.approx(60, abs=5)

    status, out, _ = run(capsys, "job", str(job_id), "--database-url", database_url)
    assert status == 0
    shown = json.loads(out)
    assert shown["id"] == str(job_id) and shown["state"] == "created"
    assert shown["data"] == {"to": "ada@example.com"} and shown["attempts"] == 0


def test_enqueue_run_at_and_database_url_from_the_environment(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    engine: Engine,
    queue: JobQueue,
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    status, out, _ = run(
        capsys, "enqueue", "t", "--data", "[1, 2]", "--run-at", "2030-01-02T03:04:05Z"
    )
    assert status == 0
    with Session(engine) as session:
        job = queue.get_job(session, out.strip())
    assert job is not None and job.data == [1, 2]
    assert (
        job.start_after is not None and job.start_after.isoformat() == "2030-01-02T03:04:05+00:00"
    )


def test_job_that_does_not_exist_exits_1(
    capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    missing = str(uuid.uuid4())
    status, out, err = run(capsys, "job", missing, "--database-url", database_url)
    assert (status, out) == (1, "")
    assert f"no job with id {missing}" in err


def test_migrate_a_custom_table_and_schema_then_use_it(
    capsys: pytest.CaptureFixture[str], admin_url: str
) -> None:
    with fresh_database(admin_url, prefix="programma_cli") as url:
        common = ("--table", "audit_jobs", "--schema", "queue", "--database-url", url)
        for _ in range(2):  # idempotent
            status, out, _ = run(capsys, "migrate", *common)
            assert status == 0
            assert "table queue.audit_jobs" in out
        engine = create_engine(url)
        try:
            # The version table lives beside the jobs table it versions (and so does
            # its table of paused topics, programma_0005).
            assert sorted(inspect(engine).get_table_names(schema="queue")) == [
                "audit_jobs",
                "audit_jobs_paused",
                "programma_alembic_version_audit_jobs",
            ]
        finally:
            engine.dispose()
        status, out, _ = run(capsys, "enqueue", "audit", "--data", "{}", *common)
        assert status == 0
        status, out, _ = run(capsys, "job", out.strip(), *common)
        assert status == 0 and json.loads(out)["topic"] == "audit"


def _with_password(database_url: str) -> tuple[str, str | None]:
    """The test database's URL with a password (PostgreSQL's trust authentication
    ignores the one planted here; MariaDB's account has its own; SQLite has none), and
    that password."""
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        url = url.set(password="s3cret")
    return url.render_as_string(hide_password=False), url.password


def _password_hidden(password: str | None, printed: str) -> bool:
    return password is None or (f":{password}@" not in printed and ":***@" in printed)


def test_migrate_shows_the_url_without_its_password(
    capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    url, password = _with_password(database_url)
    status, out, err = run(capsys, "migrate", "--database-url", url)
    assert status == 0, out + err
    assert "table programma_jobs on" in out
    assert _password_hidden(password, out + err)


def test_worker_command_processes_jobs_until_sigterm(
    database_url: str, engine: Engine, queue: JobQueue
) -> None:
    """The console script, with the URL from $DATABASE_URL, in transaction mode."""
    with Session(engine) as session, session.begin():
        job_ids = [queue.add_job(session, "cli", {"sleep": 0}) for _ in range(3)]
    script = shutil.which("programma-sa", path=str(Path(sys.executable).parent))
    assert script is not None
    worker = subprocess.Popen(
        [
            script,
            "worker",
            "tests.worker.handlers:slow",
            "--topic",
            "cli",
            "--mode",
            "transaction",
            "--concurrency",
            "2",
            "--no-listen",
            "--heartbeat",
            "0.2",
        ],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        blocking_wait_for(lambda: all_completed(engine, queue, job_ids), timeout=20)
        worker.terminate()
        output, _ = worker.communicate(timeout=20)
    finally:
        worker.kill()
    assert worker.returncode == 0, output
    assert "worker started: topics cli, mode transaction, concurrency 2" in output
    assert "polling only" in output


def test_python_dash_m_and_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "programma_sa", "worker", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    for option in (
        "--topic",
        "--mode",
        "--concurrency",
        "--no-listen",
        "--no-direct-claim",
        "--database-url",
    ):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["enqueue", "t", "--data", "{oops"], "--data is not valid JSON"),
        (["enqueue", "t"], "the following arguments are required: --data"),
        (["enqueue", "t", "--data", "{}", "--attributes", "[1]"], "attributes must be a mapping"),
        (["enqueue", "t", "--data", "{}", "--run-after", "-1"], "run_after_seconds must not be"),
        (
            ["enqueue", "t", "--data", "{}", "--run-after", "1", "--run-at", "2030-01-01T00:00Z"],
            "not allowed with argument",
        ),
        (["enqueue", "t", "--data", "{}", "--run-at", "tomorrow"], "not an ISO-8601 date"),
        (["enqueue", "t", "--data", "{}", "--retry-after", "soon"], "invalid int value: 'soon'"),
        (["job", "not-a-uuid"], "job id is not a UUID: 'not-a-uuid'"),
        (["worker", "tests.worker.handlers:slow"], "required: --topic"),
        (["worker", "no_colon", "--topic", "t"], "handler must look like module:function"),
        (["worker", "no_such_module_xyz:f", "--topic", "t"], "cannot import handler module"),
        (["worker", "tests.worker.handlers:nope", "--topic", "t"], "has no attribute 'nope'"),
        (["worker", "tests.worker.handlers:NOT_CALLABLE", "--topic", "t"], "is not callable"),
        (
            ["worker", "tests.worker.handlers:slow", "--topic", "t", "--concurrency", "0"],
            "concurrency must be an int >= 1, got 0",
        ),
        (
            ["worker", "tests.worker.handlers:slow", "--topic", "t", "--max-jobs", "0"],
            "max_jobs must be an int >= 1, or None for the adaptive claim size, got 0",
        ),
        (
            ["worker", "tests.worker.handlers:slow", "--topic", "t", "--max-jobs", "lots"],
            "--max-jobs must be a whole number or 'auto', got 'lots'",
        ),
        (
            ["worker", "tests.worker.handlers:slow", "--topic", "t", "--heartbeat", "-2"],
            "heartbeat must be a finite number of seconds > 0",
        ),
        (
            ["worker", "tests.worker.handlers:slow", "--topic", "t", "--mode", "eager"],
            "invalid choice: 'eager'",
        ),
        (
            ["worker", "tests.worker.handlers:slow", "--topic", "t", "--max-attempts", "0"],
            "max_attempts must be an int >= 1",
        ),
        (["migrate", "--table", "bad name"], "must be a PostgreSQL identifier"),
        (["migrate", "--schema", "x;drop"], "must be a PostgreSQL identifier"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], database_url: str, argv: list[str], message: str
) -> None:
    if argv and argv[0] in ("enqueue", "job", "worker", "migrate"):
        argv = [*argv, "--database-url", database_url]
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert message in err, err
    assert "usage: programma-sa" in err
    assert "Traceback" not in err


def test_no_database_url_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "job", str(uuid.uuid4()))
    assert status == 2
    assert "no database URL: pass --database-url or set $DATABASE_URL" in err


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "oracle://u:s3cret@db/app",
            "must be a PostgreSQL URL (or a SQLite or MariaDB/MySQL one), got oracle://",
        ),
        ("::not a url s3cret::", "--database-url is not a valid database URL"),
    ],
)
def test_bad_database_urls_exit_2_without_showing_the_password(
    capsys: pytest.CaptureFixture[str], url: str, message: str
) -> None:
    status, out, err = run(capsys, "job", str(uuid.uuid4()), "--database-url", url)
    assert status == 2 and message in err
    assert "s3cret" not in out + err


def test_an_unreachable_database_exits_1_without_showing_the_password(
    capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    unreachable = make_url(database_url).set(host="127.0.0.1", port=1, password="s3cret", query={})
    status, out, err = run(
        capsys,
        "enqueue",
        "t",
        "--data",
        "{}",
        "--database-url",
        unreachable.render_as_string(hide_password=False),
    )
    assert status == 1
    assert err.startswith("programma-sa: error:") and "Traceback" not in err
    assert "s3cret" not in out + err


def test_demo_on_a_given_database_leaves_nothing_behind(
    capsys: pytest.CaptureFixture[str], database_url: str, engine: Engine
) -> None:
    """On every database: where there is no LISTEN/NOTIFY the demo's worker polls."""
    before = set(inspect(engine).get_table_names())
    url, password = _with_password(database_url)
    status, out, err = run(capsys, "demo", "--database-url", url)
    assert status == 0, out + err
    assert "Demo finished" in out and "never: the rollback took the job" in out
    database = {"postgresql": "PostgreSQL", "sqlite": "SQLite", "mariadb": "MariaDB"}
    assert out.startswith(f"{database[engine.dialect.name]} "), out
    assert _password_hidden(password, out + err)
    assert set(inspect(engine).get_table_names()) == before


def test_demo_on_the_embedded_server() -> None:
    """``programma-sa demo`` as a user runs it first: no URL, the embedded wheel."""
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "programma_sa", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Starting an embedded PostgreSQL" in out
    rows = [line for line in out.splitlines() if line.startswith("  …")]
    assert [" completed " in row for row in rows] == [True] * 4 + [False]
    assert "never: the rollback took the job" in rows[-1]
    assert "Demo finished" in out
    assert "Stopping the embedded PostgreSQL." in out


@pytest.mark.parametrize(("given", "max_jobs"), [([], None), (["auto"], None), (["50"], 50)])
def test_max_jobs_is_auto_by_default_or_a_fixed_size(
    given: list[str], max_jobs: int | None
) -> None:
    """``--max-jobs auto`` (the default) is the adaptive claim size: ``None``."""
    argv = ["worker", "tests.worker.handlers:slow", "--topic", "t"]
    if given:
        argv += ["--max-jobs", *given]
    assert build_parser().parse_args(argv).max_jobs == max_jobs


@pytest.mark.parametrize(("given", "direct_claim"), [([], True), (["--no-direct-claim"], False)])
def test_no_direct_claim_turns_the_workers_direct_claim_off(
    given: list[str], direct_claim: bool
) -> None:
    argv = ["worker", "tests.worker.handlers:slow", "--topic", "t", *given]
    assert build_parser().parse_args(argv).direct_claim is direct_claim
