"""``programma-sa alembic revision``: what it refuses, without a database (the projects
it writes revisions for are in tests/migration/test_one_head.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from programma_sa.cli import main


@pytest.fixture(autouse=True)
def in_an_empty_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_it_is_listed_with_the_other_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["alembic", "revision", "--help"])
    assert done.value.code == 0
    assert "usage: programma-sa alembic revision" in capsys.readouterr().out


def test_without_an_alembic_ini_it_says_what_to_give(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["alembic", "revision"]) == 1
    assert capsys.readouterr().err == (
        f"programma-sa: error: no Alembic configuration: {tmp_path / 'alembic.ini'} does not "
        "exist (give your alembic.ini with -c FILE, or Flask-Migrate's directory with "
        "--directory DIR)\n"
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--table", "jobs; drop"], "--table must be a PostgreSQL identifier"),
        (["--table", "t" * 50], "--table must be at most 49 characters"),
        (["--schema", "a b"], "--schema must be a PostgreSQL identifier"),
    ],
)
def test_bad_names_are_usage_errors(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        main(["alembic", "revision", *arguments])
    assert refused.value.code == 2
    assert message in capsys.readouterr().err


def test_an_unknown_step_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "migrations" / "versions").mkdir(parents=True)
    (tmp_path / "migrations" / "alembic.ini").write_text("[alembic]\n")
    (tmp_path / "migrations" / "script.py.mako").write_text("${upgrades}\n")
    assert main(["alembic", "revision", "--directory", "migrations", "--to", "programma_9"]) == 1
    assert capsys.readouterr().err.startswith(
        "programma-sa: error: 'programma_9' is not a programma_sa migration step; the steps "
        "are: programma_0001, programma_0002"
    )
    assert list((tmp_path / "migrations" / "versions").iterdir()) == []


def test_a_template_without_upgrades_is_refused_and_leaves_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    migrations = tmp_path / "migrations"
    (migrations / "versions").mkdir(parents=True)
    (migrations / "alembic.ini").write_text("[alembic]\n")
    (migrations / "script.py.mako").write_text(
        "revision = ${repr(up_revision)}\ndown_revision = ${repr(down_revision)}\n"
        "def upgrade_engine1():\n    pass\n"  # a multi-database template: no ${upgrades}
    )
    assert main(["alembic", "revision", "--directory", "migrations"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("programma-sa: error: the revision template migrations/script.py.mako")
    assert "has no ${upgrades} / ${downgrades} in upgrade() and downgrade()" in error
    assert list((migrations / "versions").glob("*.py")) == []
