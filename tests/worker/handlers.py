"""Handlers that worker subprocesses import (``tests.worker.handlers:slow``)."""

from __future__ import annotations

import os
import time

from programma_sa import JobContext


def slow(ctx: JobContext) -> None:
    """Note who started the job, sleep ``data["sleep"]`` s on the first attempt, note the end."""
    ctx.set_attributes({"started_by": os.getpid()})
    if ctx.job.attempts == 1:
        time.sleep(ctx.job.data.get("sleep", 0))
    ctx.set_attributes({"finished_by": os.getpid()})


def not_a_handler() -> None:
    """Exists so the CLI can be pointed at a callable with the wrong use."""


NOT_CALLABLE = 42


def noop(ctx: JobContext) -> None:
    """Does nothing (the jobs of the schedule tests only need to exist)."""
