"""RetryPolicy arithmetic and error records: pure unit tests (no database)."""

from __future__ import annotations

import random

import pytest

from programma_sa import ConfigurationError, RetryPolicy
from programma_sa.retry import DEFAULT_RETRY, MAX_TRACEBACK_CHARS, describe_error


def test_exponential_backoff_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(base_delay=1.0, multiplier=2.0, max_delay=10.0, jitter="none")
    assert [policy.delay(attempt) for attempt in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_a_huge_attempt_number_gives_the_cap_instead_of_overflowing() -> None:
    policy = RetryPolicy(base_delay=1.0, multiplier=10.0, max_delay=60.0, jitter="none")
    assert policy.delay(100_000) == 60.0


def test_constant_policy() -> None:
    policy = RetryPolicy.constant(3.5, max_attempts=4)
    assert [policy.delay(attempt) for attempt in (1, 2, 10)] == [3.5, 3.5, 3.5]
    assert policy.max_attempts == 4 and policy.jitter == "none"


def test_full_jitter_is_uniform_below_the_backoff_and_reproducible() -> None:
    policy = RetryPolicy(base_delay=2.0, multiplier=3.0, max_delay=100.0, jitter="full")
    # Seeded: exactly the generator's draw over [0, backoff].
    assert policy.delay(3, random.Random(7)) == random.Random(7).uniform(0.0, 18.0)
    rng = random.Random(11)
    samples = [policy.delay(3, rng) for _ in range(500)]
    assert all(0.0 <= sample <= 18.0 for sample in samples)
    assert min(samples) < 2.0 and max(samples) > 16.0  # spread over the whole range


def test_equal_jitter_never_waits_less_than_half_the_backoff() -> None:
    policy = RetryPolicy(base_delay=4.0, multiplier=2.0, max_delay=100.0, jitter="equal")
    rng = random.Random(3)
    samples = [policy.delay(2, rng) for _ in range(500)]  # backoff 8
    assert all(4.0 <= sample <= 8.0 for sample in samples)
    assert min(samples) < 4.5 and max(samples) > 7.5
    seeded = random.Random(5)
    assert policy.delay(1, random.Random(5)) == 2.0 + seeded.uniform(0.0, 2.0)


def test_exhaustion_counts_deliveries() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert [policy.exhausted(n) for n in (1, 2, 3, 4)] == [False, False, True, True]
    assert not RetryPolicy(max_attempts=None).exhausted(10**6)


def test_default_policy() -> None:
    assert RetryPolicy.exponential() == DEFAULT_RETRY
    assert (DEFAULT_RETRY.max_attempts, DEFAULT_RETRY.jitter) == (5, "equal")
    assert DEFAULT_RETRY.backoff(4) == 8.0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be an int >= 1 or None, got 0"),
        ({"max_attempts": True}, "max_attempts must be an int >= 1 or None"),
        ({"base_delay": -1}, "base_delay must be finite and >= 0, got -1"),
        ({"base_delay": float("nan")}, "base_delay must be finite"),
        ({"base_delay": "1"}, "base_delay must be a number of seconds"),
        ({"max_delay": 0.5, "base_delay": 1.0}, r"max_delay \(0.5\) must not be below base_delay"),
        ({"max_delay": 1e12}, "max_delay must be at most 2147483647 seconds"),
        ({"multiplier": 0.5}, "multiplier must be a finite number >= 1, got 0.5"),
        ({"jitter": "some"}, "jitter must be one of full, equal, none, got 'some'"),
    ],
)
def test_bad_settings_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RetryPolicy(**settings)  # type: ignore[arg-type]


def test_bad_attempt_number_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="attempt must be an int >= 1, got 0"):
        DEFAULT_RETRY.delay(0)


def test_describe_error_keeps_type_message_and_a_traceback_tail() -> None:
    try:
        raise KeyError("x" * 10_000)
    except KeyError as error:
        record = describe_error(error, attempt=3)
    assert record["type"] == "KeyError"
    assert record["attempt"] == 3
    assert len(record["message"]) <= 2000 and record["message"].startswith("…")
    assert len(record["traceback"]) <= MAX_TRACEBACK_CHARS
    assert "test_describe_error_keeps_type_message_and_a_traceback_tail" in record["traceback"]


def test_describe_error_names_the_module_of_non_builtin_errors() -> None:
    record = describe_error(ConfigurationError("bad"), attempt=1)
    assert record["type"] == "programma_sa.exceptions.ConfigurationError"
    assert record["message"] == "bad"
