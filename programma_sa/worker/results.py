"""What a worker did with the jobs it claimed: :class:`PassResult`."""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["NOTHING_WRITTEN", "UNTOUCHED", "PassResult"]


@dataclass(frozen=True)
class PassResult:
    """What one pass (or, summed, a whole run) did with the jobs it claimed.

    ``left_untouched`` counts claimed jobs the worker wrote no outcome for: the
    handler changed the job itself, ``auto_complete`` was off, the worker stopped
    before running it, or its outcome could not be written — such a job is in the
    hands of the handler or of its visibility timeout.
    """

    claimed: int = 0
    completed: int = 0
    retried: int = 0
    failed: int = 0
    left_untouched: int = 0
    #: Snoozed by their handler (``ctx.snooze``): due again later, attempt given back.
    snoozed: int = 0

    def __str__(self) -> str:
        return ", ".join(
            f"{field.name.replace('_', ' ')} {getattr(self, field.name)}" for field in fields(self)
        )

    def __add__(self, other: PassResult) -> PassResult:
        # Spelled out rather than looped over fields(): a batch adds one per job.
        return PassResult(
            self.claimed + other.claimed,
            self.completed + other.completed,
            self.retried + other.retried,
            self.failed + other.failed,
            self.left_untouched + other.left_untouched,
            self.snoozed + other.snoozed,
        )


#: The outcome of a job whose handler returned (its completion is counted per batch).
NOTHING_WRITTEN = PassResult()
#: The outcome of a claimed job the worker wrote nothing for.
UNTOUCHED = PassResult(left_untouched=1)
