"""What a worker did with the jobs it claimed: :class:`PassResult`."""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["NOTHING_WRITTEN", "UNTOUCHED", "PassResult"]


@dataclass(frozen=True)
class PassResult:
    """What one pass (or, summed, a whole run) did with the jobs it claimed.

    * ``completed``, ``retried``, ``failed``: outcomes the worker wrote;
    * ``cancelled``: jobs cancelled while held (the caller's cancel, or the worker's
      own write after a cancellation reached it) — never retried;
    * ``released``: claimed, never started, given back at shutdown (claimable at
      once, the delivery not counted);
    * ``lost``: the job was no longer this worker's when its outcome (or its lease's
      renewal) was written — another worker claimed it after its lease ran out, so
      it may run twice (each logged as a WARNING);
    * ``abandoned``: still running when ``shutdown_timeout`` passed (left to its
      lease, or rolled back with its transaction);
    * ``left_untouched``: the worker wrote nothing: the handler changed the job
      itself, ``auto_complete`` was off, the worker stopped before running it (with
      nothing to release), or the outcome could not be written because the database
      was gone — such a job is in the hands of the handler or of its lease.
    """

    claimed: int = 0
    completed: int = 0
    retried: int = 0
    failed: int = 0
    cancelled: int = 0
    released: int = 0
    lost: int = 0
    abandoned: int = 0
    left_untouched: int = 0
    #: Snoozed by their handler (``ctx.snooze``): due again later, attempt given back.
    snoozed: int = 0

    def __str__(self) -> str:
        # The counts every pass can have, always; the others when they happened.
        return ", ".join(
            f"{field.name.replace('_', ' ')} {getattr(self, field.name)}"
            for field in fields(self)
            if field.name in _ALWAYS_SHOWN or getattr(self, field.name)
        )

    def times(self, count: int) -> PassResult:
        """This outcome, ``count`` times over (the outcome of a batch of alike jobs)."""
        return PassResult(*(getattr(self, field.name) * count for field in fields(self)))

    def __add__(self, other: PassResult) -> PassResult:
        # Spelled out rather than looped over fields(): a batch adds one per job.
        return PassResult(
            self.claimed + other.claimed,
            self.completed + other.completed,
            self.retried + other.retried,
            self.failed + other.failed,
            self.cancelled + other.cancelled,
            self.released + other.released,
            self.lost + other.lost,
            self.abandoned + other.abandoned,
            self.left_untouched + other.left_untouched,
            self.snoozed + other.snoozed,
        )


_ALWAYS_SHOWN = frozenset({"claimed", "completed", "retried", "failed", "left_untouched"})

#: The outcome of a job whose handler returned (its completion is counted per batch).
NOTHING_WRITTEN = PassResult()
#: The outcome of a claimed job the worker wrote nothing for.
UNTOUCHED = PassResult(left_untouched=1)
#: One job of each other outcome.
COMPLETED = PassResult(completed=1)
CANCELLED = PassResult(cancelled=1)
RELEASED = PassResult(released=1)
LOST = PassResult(lost=1)
SNOOZED = PassResult(snoozed=1)
