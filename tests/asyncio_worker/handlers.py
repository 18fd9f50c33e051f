"""Async handlers that worker subprocesses import (``tests.asyncio_worker.handlers:slow``)."""

from __future__ import annotations

import asyncio
import os

from programma_sa import AsyncJobContext


async def slow(ctx: AsyncJobContext) -> None:
    """Note who started the job, sleep ``data["sleep"]`` s on the first attempt, note the end."""
    await ctx.set_attributes({"started_by": os.getpid()})
    if ctx.job.attempts == 1:
        await asyncio.sleep(ctx.job.data.get("sleep", 0))
    await ctx.set_attributes({"finished_by": os.getpid()})


async def confirm(ctx: AsyncJobContext) -> None:
    """Transaction mode: a business row in the claim's transaction (tests.app.Order)."""
    from ..app import Order

    assert ctx.session is not None
    ctx.session.add(Order(id=ctx.job.data["order"], note=f"by {os.getpid()}"))
