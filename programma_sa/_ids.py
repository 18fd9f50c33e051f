"""Time-ordered job ids (UUID version 7, RFC 9562).

Ids are made in Python rather than by ``gen_random_uuid()`` so that an enqueue needs
no ``RETURNING`` and so that jobs enqueued with the same ``start_after`` (a bulk
``add_jobs`` shares one statement timestamp) are still claimed in the order they
were given: the claim orders by ``(start_after, id)``.

Within one process the ids are strictly increasing, even within one millisecond;
across processes they are ordered by millisecond.

An id is the 48-bit millisecond followed by 74 random bits; when the clock has not
moved past the last id made, the next one is the last plus one (RFC 9562's
monotonic random method). :func:`uuid7_many` makes a bulk enqueue's ids that way
from one clock reading and one random draw.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid

_RANDOM_BITS = 74  # 12 bits of rand_a + 62 bits of rand_b
_RAND_B_MASK = (1 << 62) - 1
_lock = threading.Lock()
_last = 0


def _reserve(count: int) -> int:
    """The first of ``count`` consecutive values above every one handed out before."""
    global _last
    candidate = (time.time_ns() // 1_000_000) << _RANDOM_BITS | secrets.randbits(_RANDOM_BITS)
    # The lock keeps values unique and increasing across threads.
    with _lock:
        first = max(candidate, _last + 1)
        _last = first + count - 1
    return first


def _as_uuid(value: int) -> uuid.UUID:
    """The UUIDv7 of a (millisecond, 74 random bits) value: version and variant bits added."""
    millis = value >> _RANDOM_BITS
    rand_a = (value >> 62) & 0xFFF
    return uuid.UUID(
        int=millis << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | value & _RAND_B_MASK
    )


def uuid7() -> uuid.UUID:
    """Return a new UUIDv7, greater than every one this process made before."""
    return _as_uuid(_reserve(1))


def uuid7_many(count: int) -> list[uuid.UUID]:
    """``count`` new UUIDv7s, increasing, greater than every one this process made before."""
    if count < 1:
        return []
    first = _reserve(count)
    return [_as_uuid(value) for value in range(first, first + count)]
