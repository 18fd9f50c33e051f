"""The fault-injection helpers do what they claim (the Worker runs through them
are in ``test_database_faults.py``).

* :func:`terminate_backends` really disconnects every other session of the
  database; a pool with ``pre_ping`` reconnects, and a dead session's queue call
  raises :class:`programma_sa.DatabaseError`.
* :func:`restart` really takes the owned embedded server down and back up; data
  survives, old connections are dead, new psycopg connections (raw and pooled)
  work.
* :func:`deliveries.analyse` catches the failures the process tests rely on it
  to catch.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from programma_sa import DatabaseError, JobQueue
from programma_sa._embedded import EmbeddedPostgres

from ..app import Job
from . import deliveries
from .connections import libpq_url
from .faults import terminate_backends

pytestmark = pytest.mark.reliability


def _backend_pids(engine: Engine) -> set[int]:
    with engine.connect() as connection:
        return set(
            connection.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                    " AND backend_type = 'client backend'"
                )
            ).scalars()
        )


def test_terminate_backends_disconnects_every_other_session(
    private_engine: Engine, private_database_url: str
) -> None:
    queue = JobQueue(Job)
    held = [private_engine.connect() for _ in range(3)]
    victims = {c.execute(text("SELECT pg_backend_pid()")).scalar_one() for c in held}
    session = Session(private_engine)
    queue.add_job(session, "t", {})  # a session mid-transaction
    victims.add(session.execute(text("SELECT pg_backend_pid()")).scalar_one())
    raw = psycopg.connect(libpq_url(private_database_url))
    victims.add(raw.info.backend_pid)

    assert terminate_backends(private_database_url) == 5

    for connection in held:
        with pytest.raises(sa_exc.OperationalError):
            connection.execute(text("SELECT 1"))
        connection.close()
    with pytest.raises(psycopg.OperationalError):
        raw.execute("SELECT 1")
    raw.close()
    # The caller's dead transaction surfaces as our one error type.
    with pytest.raises(DatabaseError):
        queue.add_job(session, "t", {})
    session.close()
    # The pool (pre_ping) replaces dead connections; nothing of the lost transaction
    # was committed.
    with Session(private_engine) as fresh:
        assert fresh.execute(select(func.count()).select_from(Job)).scalar_one() == 0
    assert not victims & _backend_pids(private_engine)


def test_restart_takes_the_owned_server_down_and_back(
    owned_postgres: EmbeddedPostgres, owned_database_url: str
) -> None:
    engine = create_engine(owned_database_url, pool_pre_ping=True)
    queue = JobQueue(Job)
    try:
        with Session(engine) as session, session.begin():
            job_id = queue.add_job(session, "survives", {"v": 1})
        raw = psycopg.connect(libpq_url(owned_database_url))

        owned_postgres.stop()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(libpq_url(owned_database_url), connect_timeout=2).close()
        owned_postgres.start()

        with pytest.raises(psycopg.OperationalError):
            raw.execute("SELECT 1")
        raw.close()
        with psycopg.connect(libpq_url(owned_database_url)) as again:
            assert again.execute("SELECT 1").fetchone() == (1,)
        # The pooled connection from before the restart is replaced on checkout,
        # and the committed job survived.
        with Session(engine) as session, session.begin():
            (claimed,) = queue.claim_jobs(session, "survives")
            assert claimed.id == job_id
    finally:
        engine.dispose()


# -- the ledger's judge ----------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _delivery(
    job_id: uuid.UUID, at: float, lease: float | None, done: bool = True, pid: int = 1
) -> deliveries.Delivery:
    claimed = T0 + timedelta(seconds=at)
    return deliveries.Delivery(
        job_id=job_id,
        attempt=pid,
        worker_pid=pid,
        claimed_at=claimed,
        lease_until=None if lease is None else claimed + timedelta(seconds=lease),
        completed_at=claimed if done else None,
    )


def test_analyse_flags_lost_early_and_double_completions() -> None:
    ok, lost, early, late, twice, unleased = (uuid.uuid4() for _ in range(6))
    stranger = uuid.uuid4()
    ledger = [
        _delivery(ok, 0, 2),
        _delivery(lost, 0, 2, done=False),
        _delivery(early, 0, 2, done=False),
        _delivery(early, 1.5, 2, pid=2),  # claimed while the first lease was live
        _delivery(late, 0, 2, done=False),
        _delivery(late, 2, 2, pid=2),  # claimed the moment the lease ended: allowed
        _delivery(twice, 0, 2),
        _delivery(twice, 3, 2, pid=2),
        _delivery(unleased, 0, None, done=False),
        _delivery(unleased, 100, None, pid=2),  # no lease end: never redeliverable
        _delivery(stranger, 0, 2),
    ]
    verdict = deliveries.analyse([ok, lost, early, late, twice, unleased], ledger)
    assert verdict.lost == {lost}
    assert sorted(job for job, _, _ in verdict.early_redeliveries) == sorted([early, unleased])
    assert verdict.redelivered == {early, late, twice, unleased}
    assert verdict.completed_twice == {twice}
    assert verdict.strangers == {stranger}
    assert verdict.deliveries == len(ledger)
    assert verdict.per_worker == {1: 7, 2: 4}
