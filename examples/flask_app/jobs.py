"""The worker side: welcome each new signup, in transaction mode.

Run it with ``flask programma worker`` (the :class:`~programma_sa.flask.Programma`
extension), so that the handler runs in the app context — ``current_app`` and
``db.session`` work as in a view::

    flask --app examples.flask_app.app programma worker examples.flask_app.jobs:send_welcome \\
        --topic send-welcome --mode transaction

In transaction mode ``db.session`` is bound to the worker's claim: marking the
signup welcomed and noting the sender on the job commit together with the job's
completion, or not at all.
"""

from __future__ import annotations

from flask import current_app
from sqlalchemy import func, select

from programma_sa import JobContext

from .models import Signup, db, queue


def send_welcome(ctx: JobContext) -> None:
    email = ctx.job.data["email"]
    sender = current_app.config["WELCOME_SENDER"]
    current_app.logger.info("welcome, %s (from %s)", email, sender)  # a real app mails here
    signup = db.session.scalars(select(Signup).filter_by(email=email)).one()
    signup.welcomed_at = func.now()
    # The job's row is locked by the worker's claim until its transaction ends; this
    # write goes through that same transaction, so it does not wait for the lock.
    queue.set_attributes(db.session, ctx.job.id, {"sender": sender})
    db.session.commit()  # a SAVEPOINT: everything commits with the job's completion
