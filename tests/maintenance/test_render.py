"""Statistics as a table, JSON and Prometheus text; the prometheus_client collector."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from programma_sa import InvalidJobInput, JobQueue, JobState, QueueStats, TopicStats
from programma_sa.maintenance import render_stats, stats
from programma_sa.prometheus import StatsCollector

from ..backends import ON_SQLITE
from .jobs import db_now, finished, put

MEASURED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
#: A hostile topic name: quotes, a backslash, a newline and non-ASCII text.
ODD = 'say "hi"\\now\nnächste'
STATS = QueueStats(
    table="queue.jobs",
    measured_at=MEASURED,
    window_seconds=300.0,
    topics=(
        TopicStats(
            topic="mail",
            created=3,
            active=2,
            processing=1,
            completed=40,
            failed=4,
            due=2,
            lag_seconds=12.25,
            expired_leases=1,
            oldest_processing_seconds=75.5,
            completed_recently=9,
            failed_recently=1,
        ),
        TopicStats(topic=ODD, created=1),
    ),
)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text, parsed by prometheus_client."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _labels(topic: str, state: str | None = None) -> tuple[tuple[str, str], ...]:
    labels = {"table": "queue.jobs", "topic": topic}
    if state is not None:
        labels["state"] = state
    return tuple(sorted(labels.items()))


def test_prometheus_text_parses_to_every_number() -> None:
    samples = _samples(render_stats(STATS, "prometheus"))
    mail = STATS.topics[0]
    expected = {
        **{
            ("programma_jobs", _labels("mail", state.value)): float(count)
            for state, count in mail.counts.items()
        },
        ("programma_jobs_due", _labels("mail")): 2.0,
        ("programma_queue_lag_seconds", _labels("mail")): 12.25,
        ("programma_jobs_lease_expired", _labels("mail")): 1.0,
        ("programma_oldest_processing_seconds", _labels("mail")): 75.5,
        ("programma_jobs_finished_recently", _labels("mail", "completed")): 9.0,
        ("programma_jobs_finished_recently", _labels("mail", "failed")): 1.0,
        ("programma_jobs_finished_recently", _labels("mail", "cancelled")): 0.0,
        ("programma_stats_window_seconds", (("table", "queue.jobs"),)): 300.0,
    }
    assert {key: value for key, value in samples.items() if ("topic", ODD) not in key[1]} == (
        expected
    )
    # The odd topic's label survives escaping and parsing byte for byte.
    assert samples[("programma_jobs", _labels(ODD, "created"))] == 1.0
    assert sum(1 for key in samples if ("topic", ODD) in key[1]) == len(expected) - 1


def test_prometheus_families_are_typed_and_documented() -> None:
    families = list(text_string_to_metric_families(render_stats(STATS, "prometheus")))
    assert {family.type for family in families} == {"gauge"}
    assert all(family.documentation for family in families)
    assert [family.name for family in families] == [
        "programma_jobs",
        "programma_jobs_due",
        "programma_queue_lag_seconds",
        "programma_jobs_lease_expired",
        "programma_oldest_processing_seconds",
        "programma_jobs_finished_recently",
        "programma_stats_window_seconds",
    ]


def test_json_holds_every_field() -> None:
    document = json.loads(render_stats(STATS, "json"))
    assert document == {
        "table": "queue.jobs",
        "measured_at": "2026-01-02T03:04:05+00:00",
        "window_seconds": 300.0,
        "topics": [
            {
                "topic": "mail",
                "created": 3,
                "active": 2,
                "processing": 1,
                "completed": 40,
                "failed": 4,
                "cancelled": 0,
                "due": 2,
                "lag_seconds": 12.25,
                "expired_leases": 1,
                "oldest_processing_seconds": 75.5,
                "completed_recently": 9,
                "failed_recently": 1,
                "cancelled_recently": 0,
            },
            {
                "topic": ODD,
                "created": 1,
                "active": 0,
                "processing": 0,
                "completed": 0,
                "failed": 0,
                "cancelled": 0,
                "due": 0,
                "lag_seconds": 0.0,
                "expired_leases": 0,
                "oldest_processing_seconds": 0.0,
                "completed_recently": 0,
                "failed_recently": 0,
                "cancelled_recently": 0,
            },
        ],
    }


def test_the_table_aligns_a_row_per_topic() -> None:
    one = QueueStats("programma_jobs", MEASURED, 60.0, (STATS.topics[0],))
    assert render_stats(one) == (
        "programma_jobs at 2026-01-02T03:04:05+00:00 (*_recently: the last 60.0s)\n"
        "topic  created  active  processing  completed  failed  due  lag_seconds"
        "  expired_leases  oldest_processing_seconds  completed_recently  failed_recently"
        "  cancelled  cancelled_recently\n"
        "mail         3       2           1         40       4    2         12.2"
        "               1                       75.5                   9                1"
        "          0                   0\n"
    )
    empty = QueueStats("programma_jobs", MEASURED, 60.0)
    assert render_stats(empty, "table").endswith("\nno jobs\n")


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(InvalidJobInput, match="format must be one of table, json, prometheus"):
        render_stats(STATS, "xml")


def test_real_stats_render_in_every_format(queue: JobQueue, session: Session) -> None:
    put(session, queue, "mail", JobState.CREATED, start_after=db_now(session) - timedelta(1))
    finished(session, queue, "mail", JobState.FAILED, 2, timedelta(seconds=5))
    snapshot = stats(session, queue)
    samples = _samples(render_stats(snapshot, "prometheus"))
    jobs = {"table": "programma_jobs", "topic": "mail"}
    assert samples[("programma_jobs", tuple(sorted({**jobs, "state": "failed"}.items())))] == 2
    assert samples[("programma_queue_lag_seconds", tuple(sorted(jobs.items())))] >= 86400
    assert json.loads(render_stats(snapshot, "json"))["topics"][0]["due"] == 1
    assert "mail" in render_stats(snapshot, "table")


# -- the prometheus_client collector ----------------------------------------------------


def test_the_collector_exposes_what_the_text_format_prints(engine: Engine, queue: JobQueue) -> None:
    with Session(engine) as session, session.begin():
        put(session, queue, "mail", JobState.PROCESSING, started_at=db_now(session))
        finished(session, queue, "mail", JobState.COMPLETED, 3, timedelta(hours=1))
    registry = CollectorRegistry()
    registry.register(StatsCollector(engine, queue, window_seconds=60))
    scraped = _samples(generate_latest(registry).decode())
    with Session(engine) as session:
        printed = _samples(render_stats(stats(session, queue, window_seconds=60), "prometheus"))
    processing_age = ("programma_oldest_processing_seconds", _jobs_labels())
    assert scraped.pop(("programma_stats_up", (("table", "programma_jobs"),))) == 1.0
    assert scraped.pop(processing_age) >= printed.pop(processing_age) - 1  # the clock moved
    assert scraped == printed
    assert scraped[("programma_jobs", _jobs_labels("completed"))] == 3.0


def _jobs_labels(state: str | None = None) -> tuple[tuple[str, str], ...]:
    labels = {"table": "programma_jobs", "topic": "mail"}
    if state is not None:
        labels["state"] = state
    return tuple(sorted(labels.items()))


def test_registering_the_collector_reads_nothing(queue: JobQueue) -> None:
    def no_sessions() -> Session:
        raise AssertionError("registration must not open a session")

    CollectorRegistry().register(StatsCollector(no_sessions, queue))


def test_an_unreadable_database_gives_up_zero_and_keeps_the_scrape(
    database_url: str, queue: JobQueue, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # A SQLite file is made on first use: one in a directory that does not exist is not.
    no_such = str(tmp_path / "no_such_directory" / "jobs.db")
    missing = make_url(database_url).set(
        database=no_such if ON_SQLITE else "programma_no_such_database"
    )
    engine = create_engine(missing.render_as_string(hide_password=False))
    registry = CollectorRegistry()
    registry.register(StatsCollector(engine, queue))
    with caplog.at_level(logging.ERROR, logger="programma_sa.prometheus"):
        scraped = _samples(generate_latest(registry).decode())
    engine.dispose()
    assert scraped == {("programma_stats_up", (("table", "programma_jobs"),)): 0.0}
    assert "could not read the statistics of programma_jobs" in caplog.text


def test_the_collector_checks_its_settings_at_construction(engine: Engine, queue: JobQueue) -> None:
    with pytest.raises(InvalidJobInput, match="window_seconds must not be negative"):
        StatsCollector(engine, queue, window_seconds=-1)
    with pytest.raises(InvalidJobInput, match="topic must not be empty"):
        StatsCollector(engine, queue, topic="")
