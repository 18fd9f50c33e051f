"""The worker side: welcome each new signup, in transaction mode.

Run it with the ``programma-sa worker`` command; no Flask app context is needed —
the worker's own session works with the ``db.Model`` classes like any SQLAlchemy
session::

    programma-sa worker examples.flask_app.jobs:send_welcome \\
        --topic send-welcome --mode transaction

``ctx.session`` is the claim's session: marking the signup as welcomed commits
together with the job's completion, or not at all.
"""

from __future__ import annotations

import logging

from sqlalchemy import func, update

from programma_sa import JobContext

from .models import Signup

log = logging.getLogger(__name__)


def send_welcome(ctx: JobContext) -> None:
    assert ctx.session is not None, "run this handler in transaction mode"
    email = ctx.job.data["email"]
    log.info("welcome, %s", email)  # a real app calls its mailer here
    ctx.session.execute(update(Signup).where(Signup.email == email).values(welcomed_at=func.now()))
