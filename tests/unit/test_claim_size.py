"""The adaptive claim size, without a database: the sizes it picks from batch figures."""

from __future__ import annotations

import pytest

from programma_sa.worker.claim_size import AdaptiveClaimSize


def test_starts_at_the_initial_size_within_the_bounds() -> None:
    assert AdaptiveClaimSize().size == 10
    assert AdaptiveClaimSize(minimum=10, maximum=1000, initial=1).size == 10
    assert AdaptiveClaimSize(minimum=1, maximum=5).size == 5


def test_sizes_are_the_1_2_5_series_within_the_bounds() -> None:
    assert AdaptiveClaimSize().sizes == (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
    assert AdaptiveClaimSize(minimum=3, maximum=300).sizes == (3, 5, 10, 20, 50, 100, 200, 300)


def test_a_deep_queue_of_quick_jobs_steps_the_size_up_per_full_batch_to_the_maximum() -> None:
    sizes = AdaptiveClaimSize(minimum=10, maximum=1000, target_seconds=1.0)
    seen = []
    for _ in range(9):
        asked = sizes.size
        sizes.record(asked=asked, claimed=asked, seconds=asked / 50_000)  # 50k jobs/s
        seen.append(sizes.size)
    assert seen == [20, 50, 100, 200, 500, 1000, 1000, 1000, 1000]


def test_grows_only_to_what_the_target_time_holds_rounded_down_to_a_step() -> None:
    sizes = AdaptiveClaimSize(minimum=10, maximum=1000, target_seconds=1.0)
    for _ in range(10):
        sizes.record(asked=sizes.size, claimed=sizes.size, seconds=sizes.size / 150)  # 150/s
    assert sizes.size == 100


def test_slow_jobs_shrink_it_at_once() -> None:
    sizes = AdaptiveClaimSize(minimum=1, maximum=1000)
    sizes.size = 500
    sizes.record(asked=500, claimed=500, seconds=250.0)  # 2 jobs/s
    assert sizes.size == 2
    sizes.record(asked=2, claimed=2, seconds=2 / 4.5)  # 4.5 jobs/s: ideal 4, not a step
    assert sizes.size == 2  # 4 rounds down to 2: no change
    sizes.record(asked=2, claimed=2, seconds=2 / 7)
    assert sizes.size == 5
    sizes.record(asked=2, claimed=2, seconds=24.0)  # 12 s a job
    assert sizes.size == 1  # never below the minimum


def test_a_claim_that_comes_back_short_does_not_grow_it() -> None:
    sizes = AdaptiveClaimSize(minimum=10, maximum=1000)
    sizes.record(asked=10, claimed=3, seconds=0.001)
    assert sizes.size == 10


def test_an_empty_claim_changes_nothing() -> None:
    sizes = AdaptiveClaimSize(minimum=10, maximum=1000)
    sizes.record(asked=10, claimed=0, seconds=0.0)
    assert sizes.size == 10


def test_a_batch_too_quick_for_the_clock_counts_as_infinitely_fast() -> None:
    sizes = AdaptiveClaimSize(minimum=10, maximum=1000)
    sizes.record(asked=10, claimed=10, seconds=0.0)
    assert sizes.size == 20


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"minimum": 0}, "need 1 <= minimum <= maximum, got minimum 0, maximum 1000"),
        (
            {"minimum": 20, "maximum": 10},
            "need 1 <= minimum <= maximum, got minimum 20, maximum 10",
        ),
        ({"target_seconds": 0}, "target_seconds must be > 0, got 0"),
        ({"target_seconds": float("nan")}, "target_seconds must be > 0, got nan"),
    ],
)
def test_refuses_bad_bounds(arguments: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError) as refused:
        AdaptiveClaimSize(**arguments)  # type: ignore[arg-type]
    assert str(refused.value) == message
