"""Handlers that ``programma-sa worker`` processes import in ``test_control.py``
(``tests.reliability.control_handlers:ledgered``).

The database is ``$DATABASE_URL`` (what the CLI reads too). Each delivery is written
to the :mod:`deliveries <tests.reliability.deliveries>` ledger when the handler
starts and stamped completed when it returns, each in a short transaction of its
own, so the ledger shows every run of every job — and when it ended.
"""

from __future__ import annotations

import functools
import os
import time

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from programma_sa import JobContext

from . import deliveries


@functools.cache
def _engine() -> Engine:
    return create_engine(os.environ["DATABASE_URL"], pool_size=2)


def ledgered(ctx: JobContext) -> None:
    """Record the delivery, sleep ``data["sleep"]`` seconds (on the first attempt
    only, with ``data["first_only"]``), stamp it completed."""
    pid = os.getpid()
    with Session(_engine()) as session, session.begin():
        deliveries.record(session, ctx.job, pid, completed=False)
    if ctx.job.attempts == 1 or not ctx.job.data.get("first_only"):
        time.sleep(ctx.job.data.get("sleep", 0))
    with Session(_engine()) as session, session.begin():
        deliveries.mark_completed(session, ctx.job, pid)
