"""The web side: ``POST /signups`` writes a signup and enqueues its welcome job in
one ``db.session`` transaction.

``create_app`` is Flask's factory (``flask --app examples.flask_app.app ...`` finds
it); the database URL comes from its argument or ``DATABASE_URL``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask, abort, request
from flask_migrate import Migrate
from sqlalchemy.exc import IntegrityError

from .models import SEND_WELCOME, Signup, db, programma, queue

#: The app's own migrations directory (what ``flask db init`` created).
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def create_app(database_url: str | None = None) -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url or os.environ["DATABASE_URL"]
    app.config["WELCOME_SENDER"] = "welcome@example.com"
    db.init_app(app)
    Migrate(app, db, directory=str(MIGRATIONS))
    programma.init_app(app)

    @app.post("/signups")
    def create_signup() -> tuple[dict[str, Any], int]:
        email = (request.get_json(silent=True) or {}).get("email")
        if not isinstance(email, str) or "@" not in email:
            abort(400, "an email address is required")
        # One transaction: the job and the signup that names it commit together.
        job_id = queue.add_job(db.session, SEND_WELCOME, {"email": email})
        db.session.add(Signup(email=email, welcome_job_id=job_id))
        try:
            db.session.commit()
        except IntegrityError:
            # A second signup for the address: the rollback takes the job
            # enqueued above with it, so nobody is welcomed twice.
            db.session.rollback()
            abort(409, f"{email} has signed up already")
        return {"email": email, "welcome_job_id": str(job_id)}, 201

    @app.get("/signups/<email>")
    def read_signup(email: str) -> dict[str, Any]:
        signup = db.session.scalars(db.select(Signup).filter_by(email=email)).one_or_none()
        if signup is None:
            abort(404)
        job = queue.get_job(db.session, signup.welcome_job_id)
        return {"email": email, "welcome": None if job is None else job.state.value}

    return app
