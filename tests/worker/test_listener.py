"""The sync worker's LISTEN thread (programma_sa.worker.listen.Listener)."""

from __future__ import annotations

import logging
import threading

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from programma_sa._listening import conninfo_from_url
from programma_sa.worker.listen import Listener

pytestmark = pytest.mark.postgresql_only("LISTEN/NOTIFY")


def test_a_connection_that_ends_after_the_stop_is_not_reported_lost(
    engine: Engine, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker's test (or its deployment) drops the database right after the worker
    stopped: the listener, still in its last wait, must not log a lost connection and
    a reconnection that will never come."""
    woken = threading.Event()
    listener = Listener(conninfo_from_url(make_url(database_url)), "ch", None, woken.set)
    listener.start()
    assert listener.wait_listening(5.0)
    pid = listener.backend_pid
    caplog.set_level(logging.WARNING, logger="programma_sa")
    listener.stop()  # does not wait: the thread is still in its poll of up to 0.5 s
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    listener.stop(timeout=5.0)
    assert not [record.getMessage() for record in caplog.records if "LISTEN" in record.getMessage()]
