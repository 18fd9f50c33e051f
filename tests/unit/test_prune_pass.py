"""``prune_pass`` and its batches, driven by scripted replies: no database, no mocks.

A prune pass is a generator of :class:`~programma_sa._execute.InTransaction` steps,
each one batch (take the prune lock, list the topics with finished jobs, one bounded
DELETE per topic and state); :class:`~.scripted.Script` answers each statement and
records which transaction it ran in.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import exc as sa_exc

from programma_sa import TTL, PruneResult, Retention
from programma_sa._operations.maintenance import MaintenanceOperations
from programma_sa.maintenance.prune import prune_pass

from .scripted import QUEUE, Each, Raise, Script, db_error

OPERATIONS: MaintenanceOperations = QUEUE.maintenance_operations

#: COMPLETED jobs kept a minute, FAILED ones forever.
COMPLETED_AFTER_A_MINUTE = Retention(default=TTL(completed=60))

#: One batch's statements, each in the batch's own transaction.
ONE_TOPIC_BATCH = [
    "InTransaction",
    "InTransaction/try_prune_lock",
    "InTransaction/finished_topics",
    "InTransaction/prune_completed",
]


def replies(*counts: int | Raise, topics: list[str] | None = None) -> dict[str, Any]:
    """The lock is free, ``topics`` have finished jobs, the DELETEs delete ``counts``."""
    return {
        "try_prune_lock": True,
        "finished_topics": ["emails"] if topics is None else topics,
        "prune_completed": Each(*counts),
    }


def run(
    script: Script,
    retention: Retention = COMPLETED_AFTER_A_MINUTE,
    batch_size: int = 10,
    max_batches: int | None = 100,
) -> PruneResult:
    return script.run(prune_pass(OPERATIONS, retention, batch_size, max_batches))


def test_lock_not_taken_stops_the_pass_skipped_because_locked() -> None:
    """Another process prunes: stop before deleting anything."""
    script = Script({"try_prune_lock": False})
    assert run(script) == PruneResult(0, 0, skipped_because_locked=True)
    assert script.trace() == ["InTransaction", "InTransaction/try_prune_lock"]
    assert script.step("try_prune_lock").params == {"p_key": OPERATIONS.prune_lock_key}


def test_lock_lost_between_batches_keeps_what_was_pruned() -> None:
    """Another process took over after a batch: its rows are counted, the pass stops."""
    script = Script({**replies(10), "try_prune_lock": Each(True, False)})
    assert run(script) == PruneResult(10, 1, skipped_because_locked=True)
    assert script.trace() == [*ONE_TOPIC_BATCH, "InTransaction", "InTransaction/try_prune_lock"]


def test_batches_run_until_one_deletes_fewer_than_batch_size() -> None:
    """Full batches mean more may be expired; a short one ends the pass."""
    script = Script(replies(10, 10, 4))
    assert run(script, batch_size=10) == PruneResult(24, 3, skipped_because_locked=False)
    assert script.trace() == ONE_TOPIC_BATCH * 3


def test_each_batch_is_its_own_transaction_taking_the_lock_first() -> None:
    """The lock is transaction-level: every batch takes it before deleting."""
    script = Script(replies(10, 0))
    run(script)
    units = script.steps("InTransaction")
    assert len(units) == 2
    for unit in units:
        ran_inside = [
            handed.name
            for handed in script.handed
            if handed.unit is not None and handed.unit.step is unit
        ]
        assert ran_inside == ["try_prune_lock", "finished_topics", "prune_completed"]


def test_empty_batch_ends_the_pass() -> None:
    """Nothing expired: one batch deleting nothing."""
    script = Script(replies(0))
    assert run(script) == PruneResult(0, 1, skipped_because_locked=False)


def test_max_batches_is_honoured() -> None:
    """After max_batches full batches the pass stops; the next pass continues."""
    script = Script(replies(10, 10, 10))
    assert run(script, max_batches=2) == PruneResult(20, 2, skipped_because_locked=False)
    assert len(script.steps("InTransaction")) == 2


def test_no_max_batches_runs_until_a_short_batch() -> None:
    """max_batches=None: no limit but the expired rows."""
    full = [10] * 150
    script = Script(replies(*full, 1))
    assert run(script, max_batches=None) == PruneResult(1501, 151, skipped_because_locked=False)


@pytest.mark.parametrize(
    "retention",
    [Retention(), Retention(default=TTL(), topics={"audit": TTL(completed=None, failed=None)})],
    ids=["default", "every-topic-kept"],
)
def test_retention_that_prunes_nothing_yields_no_step(retention: Retention) -> None:
    """Nothing has a TTL: not even the lock is taken."""
    script = Script({})
    assert run(script, retention) == PruneResult(0, 0, skipped_because_locked=False)
    assert script.trace() == []


def test_batch_asks_each_topic_and_state_for_the_room_left() -> None:
    """COMPLETED then FAILED per topic, each DELETE limited to what the batch has left;
    a full batch asks no further."""
    retention = Retention(default=TTL(completed=60, failed=3600))
    script = Script({**replies(4, 4, topics=["a", "b"]), "prune_failed": Each(2)})
    assert run(script, retention, batch_size=10, max_batches=1) == PruneResult(10, 1, False)
    deletes = [
        (handed.name, handed.step.params)
        for handed in script.handed
        if handed.name.startswith("prune_")
    ]
    assert deletes == [
        ("prune_completed", {"p_topic": "a", "p_ttl_seconds": 60.0, "p_limit": 10}),
        ("prune_failed", {"p_topic": "a", "p_ttl_seconds": 3600.0, "p_limit": 6}),
        ("prune_completed", {"p_topic": "b", "p_ttl_seconds": 60.0, "p_limit": 4}),
    ]  # "b"'s FAILED jobs are not asked: the batch is full


def test_batch_skips_a_topic_kept_forever() -> None:
    """A topic whose TTL is None for a state is never asked to delete that state."""
    retention = Retention(default=TTL(completed=60), topics={"audit": TTL(failed=10)})
    script = Script({**replies(1, topics=["audit", "emails"]), "prune_failed": Each(1)})
    run(script, retention)
    deletes = [
        (handed.name, handed.step.params["p_topic"])
        for handed in script.handed
        if handed.name.startswith("prune_")
    ]
    assert deletes == [("prune_failed", "audit"), ("prune_completed", "emails")]


def test_database_error_in_a_batch_ends_the_pass_with_it() -> None:
    """prune_pass does not swallow a database error: the Pruner or the duty decides."""
    script = Script(replies(10, Raise(db_error())))
    with pytest.raises(sa_exc.OperationalError):
        run(script)
    assert script.trace() == ONE_TOPIC_BATCH * 2
