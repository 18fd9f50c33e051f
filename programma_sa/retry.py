"""Retry policies: when to try a failed job again, and when to give up.

A :class:`RetryPolicy` is pure arithmetic — no database, no clock. The worker asks
it two questions after a handler raised on a job's ``attempts``-th delivery:

* :meth:`RetryPolicy.exhausted` — give up now (the job goes to FAILED)?
* :meth:`RetryPolicy.delay` — otherwise, how many seconds until the next attempt?

and applies the answer with one conditional UPDATE (the job stays ACTIVE and becomes
claimable again at ``statement_timestamp() + delay``). A handler that runs its own
lifecycle (the npm package's way) can ask the same questions and apply the answer
itself with ``set_job_start_date`` / ``set_retry_after_seconds``::

    policy = RetryPolicy.exponential(max_attempts=8, base_delay=2.0, max_delay=600.0)
    policy.delay(1)   # attempt 1 failed: about 2 s (with jitter)
    policy.delay(4)   # attempt 4 failed: about 16 s
    policy.exhausted(8)  # True: the eighth delivery was the last

Jitter spreads the retries of jobs that failed together (a downstream outage) so
they do not all come back in the same instant:

* ``"full"`` — uniform in ``[0, backoff]`` (fewest collisions, may retry at once);
* ``"equal"`` — uniform in ``[backoff / 2, backoff]`` (never less than half);
* ``"none"`` — exactly ``backoff``.
"""

from __future__ import annotations

import math
import random
import traceback
from dataclasses import dataclass
from typing import Any, Literal

from ._validation import MAX_SECONDS
from .exceptions import ConfigurationError

__all__ = ["DEFAULT_RETRY", "Jitter", "RetryPolicy", "describe_error", "error_type_name"]

Jitter = Literal["full", "equal", "none"]
_JITTERS: tuple[Jitter, ...] = ("full", "equal", "none")

#: Longest exception message and traceback tail kept in a job's ``last_error``.
MAX_ERROR_MESSAGE_CHARS = 2000
MAX_TRACEBACK_CHARS = 4000


def _check_seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"RetryPolicy {what} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ConfigurationError(f"RetryPolicy {what} must be finite and >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class RetryPolicy:
    """Up to ``max_attempts`` deliveries, waiting ``base_delay * multiplier ** (n - 1)`` (capped).

    :param max_attempts: deliveries before giving up (``None``: retry forever). The
        count is the job's ``attempts`` column, which every claim increments.
    :param base_delay: seconds to wait after the first failure (before jitter).
    :param multiplier: growth per further failure; ``1`` gives a constant delay.
    :param max_delay: cap on the backoff before jitter.
    :param jitter: ``"full"``, ``"equal"`` or ``"none"`` (see the module docs).
    """

    max_attempts: int | None = 5
    base_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 300.0
    jitter: Jitter = "equal"

    def __post_init__(self) -> None:
        attempts = self.max_attempts
        if attempts is not None and (
            isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1
        ):
            raise ConfigurationError(
                f"RetryPolicy max_attempts must be an int >= 1 or None, got {attempts!r}"
            )
        base = _check_seconds(self.base_delay, "base_delay")
        cap = _check_seconds(self.max_delay, "max_delay")
        if cap > MAX_SECONDS:
            raise ConfigurationError(
                f"RetryPolicy max_delay must be at most {MAX_SECONDS} seconds, got {cap}"
            )
        if cap < base:
            raise ConfigurationError(
                f"RetryPolicy max_delay ({cap}) must not be below base_delay ({base})"
            )
        multiplier = self.multiplier
        if (
            isinstance(multiplier, bool)
            or not isinstance(multiplier, (int, float))
            or not math.isfinite(multiplier)
            or multiplier < 1
        ):
            raise ConfigurationError(
                f"RetryPolicy multiplier must be a finite number >= 1, got {multiplier!r}"
            )
        if self.jitter not in _JITTERS:
            raise ConfigurationError(
                f"RetryPolicy jitter must be one of {', '.join(_JITTERS)}, got {self.jitter!r}"
            )

    @classmethod
    def constant(cls, delay: float, *, max_attempts: int | None = 5) -> RetryPolicy:
        """The same ``delay`` after every failure, no jitter."""
        return cls(
            max_attempts=max_attempts,
            base_delay=delay,
            multiplier=1.0,
            max_delay=delay,
            jitter="none",
        )

    @classmethod
    def exponential(
        cls,
        *,
        max_attempts: int | None = 5,
        base_delay: float = 1.0,
        multiplier: float = 2.0,
        max_delay: float = 300.0,
        jitter: Jitter = "equal",
    ) -> RetryPolicy:
        """Exponential backoff with jitter (the defaults of :class:`RetryPolicy`)."""
        return cls(max_attempts, base_delay, multiplier, max_delay, jitter)

    def exhausted(self, attempts: int) -> bool:
        """Whether the delivery numbered ``attempts`` was the last one allowed."""
        return self.max_attempts is not None and attempts >= self.max_attempts

    def backoff(self, attempt: int) -> float:
        """The capped delay after failed attempt number ``attempt`` (1-based), before jitter."""
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise ConfigurationError(f"attempt must be an int >= 1, got {attempt!r}")
        try:
            raw = self.base_delay * self.multiplier ** (attempt - 1)
        except OverflowError:  # a huge attempt number: the cap applies anyway
            return self.max_delay
        return min(self.max_delay, raw)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt``, jitter applied.

        :param rng: the random source (a seeded ``random.Random`` makes it
            reproducible); the ``random`` module's shared generator by default.
        """
        backoff = self.backoff(attempt)
        uniform = random.uniform if rng is None else rng.uniform
        if self.jitter == "full":
            return uniform(0.0, backoff)
        if self.jitter == "equal":
            return backoff / 2 + uniform(0.0, backoff / 2)
        return backoff


#: The worker's default: 5 deliveries, 1 s, 2 s, 4 s, 8 s apart (equal jitter).
DEFAULT_RETRY = RetryPolicy()


def _tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def error_type_name(error: BaseException) -> str:
    """``error``'s type as ``last_error.type`` records it: a builtin's bare name
    (``ValueError``), any other's module and qualified name."""
    kind = type(error)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def describe_error(error: BaseException, attempt: int) -> dict[str, Any]:
    """The JSON record of a handler's exception, stored as ``attributes.last_error``:
    ``type``, ``message``, ``traceback`` (the innermost frames) and ``attempt``.

    The message and the traceback are cut to their last few thousand characters, so
    a runaway exception cannot make the job's attributes unstorable.
    """
    # The frames only: type and message have their own fields (and a huge message
    # must not push the frames out of the kept tail).
    trace = "".join(traceback.format_tb(error.__traceback__))
    return {
        "type": error_type_name(error),
        "message": _tail(str(error), MAX_ERROR_MESSAGE_CHARS),
        "traceback": _tail(trace, MAX_TRACEBACK_CHARS),
        "attempt": attempt,
    }
