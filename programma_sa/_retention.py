"""How long finished jobs are kept: a TTL per topic, with a default.

::

    retention = Retention(
        default=TTL(completed=timedelta(days=1), failed=timedelta(days=14)),
        topics={"audit": TTL(completed=None, failed=None)},  # keep audit jobs forever
    )

A topic listed in ``topics`` uses its own :class:`TTL` for every state (its
``None`` means *keep forever*, not *use the default*); every other topic uses the
default. A TTL is measured from the job's ``finished_at`` against the database's
clock. Every value is checked when the object is built, so a bad setting fails at
start-up rather than in the first prune.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import cast

from . import _validation as check
from .exceptions import InvalidJobInput
from .models import JobState

__all__ = ["FINISHED", "TTL", "Retention"]

#: The states a TTL applies to, in the order a prune visits them.
FINISHED = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


def _ttl_seconds(value: object, what: str) -> float | None:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    return check.optional_seconds(value, what)


@dataclass(frozen=True)
class TTL:
    """How long COMPLETED, FAILED and CANCELLED jobs are kept after they finish.

    Seconds (``int``/``float``) or a :class:`~datetime.timedelta`; ``None`` keeps
    them forever. Stored as seconds.
    """

    completed: float | timedelta | None = None
    failed: float | timedelta | None = None
    cancelled: float | timedelta | None = None

    def __post_init__(self) -> None:
        for state in FINISHED:
            name = state.value
            object.__setattr__(self, name, _ttl_seconds(getattr(self, name), f"TTL.{name}"))

    def seconds(self, state: JobState) -> float | None:
        """The TTL of ``state`` (COMPLETED, FAILED or CANCELLED) in seconds; ``None``:
        kept forever."""
        if state not in FINISHED:
            raise ValueError(f"only finished jobs have a TTL, not {state.value} ones")
        # __post_init__ stored seconds (or None) in place of any timedelta.
        return cast("float | None", getattr(self, state.value))


@dataclass(frozen=True)
class Retention:
    """The TTLs :func:`~programma_sa.maintenance.prune` applies: per topic, with a default.

    The default keeps everything (``TTL()``), so nothing is pruned until a TTL is set.
    """

    default: TTL = field(default_factory=TTL)
    topics: Mapping[str, TTL] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.default, TTL):
            raise InvalidJobInput(
                f"Retention default must be a TTL, got {type(self.default).__name__}"
            )
        if not isinstance(self.topics, Mapping):
            raise InvalidJobInput(
                f"Retention topics must be a mapping of topic to TTL, "
                f"got {type(self.topics).__name__}"
            )
        for topic, ttl in self.topics.items():
            check.check_topic(topic)
            if not isinstance(ttl, TTL):
                raise InvalidJobInput(
                    f"Retention for topic {topic!r} must be a TTL, got {type(ttl).__name__}"
                )
        # A read-only copy: the caller's dict can change without changing the policy.
        object.__setattr__(self, "topics", MappingProxyType(dict(self.topics)))

    def ttl(self, topic: str) -> TTL:
        """The TTL that applies to ``topic``."""
        return self.topics.get(topic, self.default)

    @property
    def prunes_anything(self) -> bool:
        """Whether any TTL is set at all (else a prune has nothing to do)."""
        return self.prunes(FINISHED)

    def prunes(self, states: Iterable[JobState]) -> bool:
        """Whether any TTL is set for one of ``states``."""
        ttls = (self.default, *self.topics.values())
        return any(ttl.seconds(state) is not None for ttl in ttls for state in states)
