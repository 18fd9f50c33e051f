"""Helpers for the AsyncWorker tests: waiting without blocking the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``condition`` (a plain function) until it is truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)
    return value


def parametrize_args(test: Callable[..., Any]) -> tuple[Any, list[Any]]:
    """The ``(argnames, argvalues)`` of ``test``'s ``@pytest.mark.parametrize``.

    Lets a test here run on the very parameter table of a sync test: one table,
    asserted against both workers.
    """
    marks = [mark for mark in getattr(test, "pytestmark", []) if mark.name == "parametrize"]
    assert len(marks) == 1, f"{test.__name__} has no single parametrize mark"
    names, values = marks[0].args
    return names, list(values)
