"""Time-ordered job ids (UUID version 7, RFC 9562).

Ids are made in Python rather than by ``gen_random_uuid()`` so that an enqueue needs
no ``RETURNING`` and so that jobs enqueued with the same ``start_after`` (a bulk
``add_jobs`` shares one statement timestamp) are still claimed in the order they
were given: the claim orders by ``(start_after, id)``.

Within one process the ids are strictly increasing, even within one millisecond;
across processes they are ordered by millisecond.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid

_RANDOM_BITS = 74  # 12 bits of rand_a + 62 bits of rand_b
_lock = threading.Lock()
_last = 0


def uuid7() -> uuid.UUID:
    """Return a new UUIDv7, greater than every one this process made before."""
    global _last
    candidate = (time.time_ns() // 1_000_000) << _RANDOM_BITS | secrets.randbits(_RANDOM_BITS)
    with _lock:
        value = max(candidate, _last + 1)
        _last = value
    millis = value >> _RANDOM_BITS
    rand_a = (value >> 62) & 0xFFF
    rand_b = value & ((1 << 62) - 1)
    return uuid.UUID(int=millis << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b)
