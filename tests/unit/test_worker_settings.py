"""WorkerSettings: one checked object behind Worker, AsyncWorker and the CLI."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, fields
from typing import get_type_hints

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import URL

from programma_sa import ConfigurationError, JobQueue, RetryPolicy, Worker, WorkerSettings
from programma_sa.worker import WorkerOptions

from ..app import Job


def test_the_keyword_options_are_the_settings_besides_topics() -> None:
    settings = {field.name for field in fields(WorkerSettings)}
    assert set(get_type_hints(WorkerOptions)) == settings - {"topics"}


def test_settings_are_normalised_and_frozen() -> None:
    settings = WorkerSettings(
        topics=["a", "b", "a"], heartbeat=2, database_url="postgresql://u@h/d"
    )
    assert settings.topics == ("a", "b")
    assert settings.heartbeat == 2.0 and isinstance(settings.heartbeat, float)
    assert isinstance(settings.database_url, URL)
    with pytest.raises(FrozenInstanceError):
        settings.max_jobs = 3  # type: ignore[misc]


def test_a_bad_setting_is_refused_when_the_settings_are_built() -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"^max_jobs must be an int >= 1, or None for the adaptive claim size, got 0$",
    ):
        WorkerSettings(topics="a", max_jobs=0)
    with pytest.raises(ConfigurationError, match="database_url must be a URL string"):
        WorkerSettings(topics="a", database_url=5)  # type: ignore[arg-type]
    with pytest.raises(
        ConfigurationError, match=r"^lease_renewal must be True or False, got 'yes'$"
    ):
        WorkerSettings(topics="a", lease_renewal="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"^direct_claim must be True or False, got 1$"):
        WorkerSettings(topics="a", direct_claim=1)  # type: ignore[arg-type]
    with pytest.raises(
        ConfigurationError,
        match=r"^cancel_grace_period must be a finite number of seconds >= 0, got -1$",
    ):
        WorkerSettings(topics="a", cancel_grace_period=-1)


def test_max_jobs_is_adaptive_by_default_and_fixed_when_given() -> None:
    assert WorkerSettings(topics="a").max_jobs is None
    assert WorkerSettings(topics="a", max_jobs=None).max_jobs is None
    assert WorkerSettings(topics="a", max_jobs=250).max_jobs == 250


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_max_jobs_refuses_what_is_not_a_size_nor_none(bad: object) -> None:
    with pytest.raises(ConfigurationError) as refused:
        WorkerSettings(topics="a", max_jobs=bad)  # type: ignore[arg-type]
    assert str(refused.value) == (
        f"max_jobs must be an int >= 1, or None for the adaptive claim size, got {bad!r}"
    )


def test_the_lease_defaults_keep_a_newcomer_from_running_a_job_twice() -> None:
    """Lease renewal is on by default; a cancelled async handler gets 5 s."""
    settings = WorkerSettings(topics="a")
    assert settings.lease_renewal is True and settings.cancel_grace_period == 5.0


def test_a_worker_from_settings_has_those_settings() -> None:
    settings = WorkerSettings(
        topics="emails",
        mode="transaction",
        max_jobs=7,
        retry=RetryPolicy(max_attempts=2),
        listen=False,
    )
    engine = create_engine("postgresql+psycopg://u@localhost/db")  # no connection opened
    worker = Worker.from_settings(JobQueue(Job), engine, lambda ctx: None, settings)
    assert worker.settings == settings
    assert (
        Worker(JobQueue(Job), engine, "emails", lambda ctx: None, **settings.options()).settings
        == settings
    )


def test_topic_retry_replaces_retry_for_its_topics() -> None:
    once = RetryPolicy(max_attempts=1)
    topic_retry = {"a": once, "b": None}
    settings = WorkerSettings(topics=["a", "b", "c"], topic_retry=topic_retry)
    topic_retry["c"] = once  # the settings keep their own copy

    assert settings.retry_for("a") is once
    assert settings.retry_for("b") is None
    assert settings.retry_for("c") == RetryPolicy()
    with pytest.raises(
        ConfigurationError,
        match=r"^topic_retry must map topics to a RetryPolicy or None, got 'a': 3$",
    ):
        WorkerSettings(topics="a", topic_retry={"a": 3})  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError, match=r"^topic_retry must be a mapping"):
        WorkerSettings(topics="a", topic_retry=[])  # type: ignore[arg-type]
