"""Which row layout a unique enqueue sends: the settings its jobs share once, as
parameters, or every setting in each row (DB-free: the operation is only built)."""

from __future__ import annotations

import json

import pytest

from programma_sa import JobSpec
from programma_sa._operations.jobs import JobOperations
from programma_sa.uniqueness import ALL_STATES

from ..app import Job

OPERATIONS = JobOperations(Job.__table__, notify=False, max_payload_bytes=1 << 20)  # type: ignore[arg-type]


def _first_step(specs: list[JobSpec]) -> tuple[str, dict[str, object]]:
    operation = next(OPERATIONS.add_jobs("t", specs))
    return operation.statement, operation.params


def test_keys_and_priorities_with_shared_settings_send_short_rows() -> None:
    statement, params = _first_step(
        [JobSpec({"n": n}, unique_key=f"k{n}", priority=n, retry_after_seconds=9) for n in (1, 2)]
    )
    assert statement == "insert_unique_keep_shared"
    rows = json.loads(str(params["p_jobs"]))
    assert [row[1:] for row in rows] == [[{"n": 1}, "k1", 1], [{"n": 2}, "k2", 2]]
    assert (params["p_retry_after_seconds"], params["p_unique_states"]) == (
        9,
        "{created,active,processing}",
    )


@pytest.mark.parametrize(
    "other",
    [
        JobSpec("b", unique_key="k2", retry_after_seconds=5),
        JobSpec("b", unique_key="k2", unique_states=ALL_STATES),
        JobSpec("b"),  # no key
    ],
    ids=["a setting of its own", "unique states of its own", "a job without a key"],
)
def test_a_job_that_differs_in_more_than_its_priority_makes_every_row_carry_all(
    other: JobSpec,
) -> None:
    statement, params = _first_step([JobSpec("a", unique_key="k1"), other])
    assert statement == "insert_unique_keep"
    assert "p_unique_states" not in params
    assert all(len(row) == 9 for row in json.loads(str(params["p_jobs"])))
