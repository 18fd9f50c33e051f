"""How many jobs the next claim asks for, when the worker's ``max_jobs`` is left to it.

A fixed claim size is wrong one way or the other: 10 starves a deep queue of quick
jobs (each claim is a round trip and an index scan, paid for ten jobs), 1,000 lets
one worker hold a thousand slow jobs while its peers idle. :class:`AdaptiveClaimSize`
aims at a claim whose jobs take about ``target_seconds`` to run: after each claim
batch it measures the batch's throughput (jobs finished per second of the batch's
wall time, so concurrency counts) and moves the size towards ``throughput *
target_seconds`` — down at once, up at most one step per batch, and only after a
claim that came back full (a claim that found fewer jobs than it asked for says the
queue is shallow, not that a larger claim would help). The size stays within
``minimum`` and ``maximum``.

Sizes are *quantized*: after the first claim (``initial``), the size is always one
of the 1-2-5 series (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, …) between
``minimum`` and ``maximum``, or one of those two, rounded down — so a worker asks
for a handful of distinct sizes over its life (one claim statement each, if they
are cached or prepared per size), and a step up is x2 or x2.5.

No I/O and no clock: the worker reports each batch's figures.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

__all__ = ["AdaptiveClaimSize"]


def _series(minimum: int, maximum: int) -> list[int]:
    """The sizes a claim may have: the 1-2-5 series within the bounds, and the bounds."""
    sizes = {minimum, maximum}
    decade = 1
    while decade <= maximum:
        sizes.update(size for size in (decade, 2 * decade, 5 * decade) if minimum < size < maximum)
        decade *= 10
    return sorted(sizes)


@dataclass
class AdaptiveClaimSize:
    """The next claim's size, learnt from the batches before it."""

    #: The smallest claim.
    minimum: int = 1
    #: The largest claim.
    maximum: int = 1_000
    #: How long the jobs of one claim should take to run, about.
    target_seconds: float = 1.0
    #: The size of the first claim (brought within ``minimum`` and ``maximum``).
    initial: int = 10
    #: The size the next claim asks for.
    size: int = field(init=False)
    _sizes: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.maximum:
            raise ValueError(
                f"need 1 <= minimum <= maximum, got minimum {self.minimum}, maximum {self.maximum}"
            )
        if not (math.isfinite(self.target_seconds) and self.target_seconds > 0):
            raise ValueError(f"target_seconds must be > 0, got {self.target_seconds!r}")
        self._sizes = _series(self.minimum, self.maximum)
        self.size = min(max(self.initial, self.minimum), self.maximum)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Every size a claim may ask for after the first."""
        return tuple(self._sizes)

    def _at_most(self, ideal: int) -> int:
        """The largest allowed size <= ``ideal`` (the minimum if none is)."""
        index = bisect.bisect_right(self._sizes, ideal)
        return self._sizes[max(index - 1, 0)]

    def _step_up(self, size: int) -> int:
        """The next allowed size above ``size`` (the maximum if none is)."""
        index = bisect.bisect_right(self._sizes, size)
        return self._sizes[min(index, len(self._sizes) - 1)]

    def record(self, asked: int, claimed: int, seconds: float) -> None:
        """A batch ended: ``claimed`` of the ``asked`` jobs, run in ``seconds``
        (from the claim returning to the batch's last job finishing)."""
        if claimed <= 0:
            return
        if seconds <= 0:
            ideal = self.maximum
        else:
            ideal = math.floor(claimed / seconds * self.target_seconds)
        if ideal < self.size:
            self.size = self._at_most(ideal)
        elif claimed >= asked:
            self.size = min(self._at_most(ideal), self._step_up(self.size))
