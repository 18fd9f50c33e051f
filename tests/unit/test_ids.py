"""UUIDv7 job ids: valid, version 7, strictly increasing within a process."""

from __future__ import annotations

import threading
import time
import uuid

from programma_sa._ids import uuid7


def test_uuid7_has_version_and_variant() -> None:
    value = uuid7()
    assert value.version == 7
    assert value.variant == uuid.RFC_4122


def test_uuid7_carries_the_current_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert before <= value.int >> 80 <= after + 1


def test_uuid7_is_strictly_increasing_even_within_one_millisecond() -> None:
    values = [uuid7() for _ in range(10_000)]
    assert values == sorted(values)
    assert len(set(values)) == len(values)


def test_uuid7_is_unique_across_threads() -> None:
    results: list[uuid.UUID] = []
    lock = threading.Lock()

    def make() -> None:
        made = [uuid7() for _ in range(2_000)]
        with lock:
            results.extend(made)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 8_000
