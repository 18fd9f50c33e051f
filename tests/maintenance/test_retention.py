"""TTL and Retention: what they accept, and the exact error for what they refuse."""

from __future__ import annotations

from datetime import timedelta

import pytest

from programma_sa import TTL, InvalidJobInput, JobState, Retention


def test_seconds_and_timedeltas() -> None:
    ttl = TTL(completed=timedelta(hours=1), failed=90)
    assert ttl.seconds(JobState.COMPLETED) == 3600.0
    assert ttl.seconds(JobState.FAILED) == 90.0
    assert TTL().seconds(JobState.COMPLETED) is None  # kept forever
    assert TTL(completed=0).seconds(JobState.COMPLETED) == 0.0  # pruned once finished


def test_a_topic_ttl_replaces_the_default_whole() -> None:
    retention = Retention(default=TTL(completed=60, failed=600), topics={"audit": TTL(failed=5)})
    assert retention.ttl("anything") == TTL(completed=60, failed=600)
    assert retention.ttl("audit").seconds(JobState.COMPLETED) is None
    assert retention.ttl("audit").seconds(JobState.FAILED) == 5.0


def test_the_policy_is_a_copy_of_the_callers_mapping() -> None:
    topics = {"a": TTL(completed=1)}
    retention = Retention(topics=topics)
    topics["b"] = TTL(completed=2)
    assert set(retention.topics) == {"a"}


def test_prunes_anything() -> None:
    assert not Retention().prunes_anything
    assert not Retention(topics={"a": TTL()}).prunes_anything
    assert Retention(topics={"a": TTL(failed=1)}).prunes_anything
    assert Retention(default=TTL(completed=1)).prunes_anything


def test_only_finished_states_have_a_ttl() -> None:
    with pytest.raises(ValueError, match="only finished jobs have a TTL, not active ones"):
        TTL(completed=1).seconds(JobState.ACTIVE)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TTL(completed=-1), r"TTL.completed must not be negative, got -1"),
        (lambda: TTL(failed=-0.5), r"TTL.failed must not be negative, got -0.5"),
        (lambda: TTL(completed=timedelta(seconds=-3)), r"TTL.completed must not be negative"),
        (lambda: TTL(completed=float("nan")), r"TTL.completed must be finite, got nan"),
        (lambda: TTL(failed=float("inf")), r"TTL.failed must be finite, got inf"),
        (lambda: TTL(completed="7d"), r"TTL.completed must be a number of seconds, got '7d'"),  # type: ignore[arg-type]
        (lambda: TTL(failed=True), r"TTL.failed must be a number of seconds, got True"),
        (
            lambda: Retention(default=3600),  # type: ignore[arg-type]
            r"Retention default must be a TTL, got int",
        ),
        (
            lambda: Retention(topics=[("a", TTL())]),  # type: ignore[arg-type]
            r"Retention topics must be a mapping of topic to TTL, got list",
        ),
        (
            lambda: Retention(topics={"a": 60}),  # type: ignore[dict-item]
            r"Retention for topic 'a' must be a TTL, got int",
        ),
        (lambda: Retention(topics={"": TTL()}), r"topic must not be empty"),
    ],
)
def test_bad_settings_are_refused_by_name(build: object, message: str) -> None:
    with pytest.raises(InvalidJobInput, match=message):
        build()  # type: ignore[operator]
