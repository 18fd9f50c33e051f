"""How many jobs the next claim asks for, when the worker's ``max_jobs`` is left to it.

A fixed claim size is wrong one way or the other: 10 starves a deep queue of quick
jobs (each claim is a round trip and an index scan, paid for ten jobs), 1,000 lets
one worker hold a thousand slow jobs while its peers idle. :class:`AdaptiveClaimSize`
aims at a claim whose jobs take about ``target_seconds`` to run: after each claim
batch it measures the batch's throughput (jobs finished per second of the batch's
wall time, so concurrency counts) and moves the size towards ``throughput *
target_seconds`` — down at once, up at most doubling per batch, and only after a
claim that came back full (a claim that found fewer jobs than it asked for says the
queue is shallow, not that a larger claim would help). The size stays within
``minimum`` and ``maximum``.

No I/O and no clock: the worker reports each batch's figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["AdaptiveClaimSize"]


@dataclass
class AdaptiveClaimSize:
    """The next claim's size, learnt from the batches before it."""

    #: The size of the first claim, and the smallest the size goes.
    minimum: int = 10
    #: The largest claim.
    maximum: int = 1_000
    #: How long the jobs of one claim should take to run, about.
    target_seconds: float = 1.0
    #: The size the next claim asks for.
    size: int = field(init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.maximum:
            raise ValueError(
                f"need 1 <= minimum <= maximum, got minimum {self.minimum}, maximum {self.maximum}"
            )
        if not (math.isfinite(self.target_seconds) and self.target_seconds > 0):
            raise ValueError(f"target_seconds must be > 0, got {self.target_seconds!r}")
        self.size = self.minimum

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
            self.size = max(self.minimum, ideal)
        elif claimed >= asked:
            self.size = min(self.maximum, ideal, 2 * self.size)
