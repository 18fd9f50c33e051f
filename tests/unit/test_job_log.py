"""The job log's bookkeeping, without a database: a handler is timed only when its
line will be logged (INFO), and a time kept is dropped with its line."""

from __future__ import annotations

import logging

import pytest

from programma_sa.worker.job_log import JobLog
from programma_sa.worker.results import COMPLETED

from .scripted import job

LOGGER = "programma_sa.worker"


def test_with_info_off_nothing_is_wanted_nor_kept(caplog: pytest.LogCaptureFixture) -> None:
    book = JobLog()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert not book.wanted
        book.finished(job(), COMPLETED)
    assert not caplog.records


def test_a_time_kept_while_info_was_on_is_dropped_when_info_is_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    book = JobLog()
    first = job()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert book.wanted
        book.ran(first, 0.25)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        book.finished(first, COMPLETED)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        book.finished(first, COMPLETED)  # its time is gone: "?"
    assert [record.duration_ms for record in caplog.records] == [None]  # type: ignore[attr-defined]


def test_with_info_on_the_line_says_how_long_the_handler_ran(
    caplog: pytest.LogCaptureFixture,
) -> None:
    book = JobLog()
    one = job()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        book.ran(one, 0.25)
        book.finished(one, COMPLETED)
    assert [record.duration_ms for record in caplog.records] == [250.0]  # type: ignore[attr-defined]
