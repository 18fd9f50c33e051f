"""The forms a PostgreSQL URL takes in applications, for one database."""

from __future__ import annotations

from sqlalchemy.engine import make_url

#: Every form, by name: the scheme (``drivername``) each writes.
FORMS = {
    "heroku": "postgres",  # postgres:// — Heroku and most platforms
    "bare": "postgresql",  # SQLAlchemy 2.0 would pick psycopg2 for it
    "psycopg": "postgresql+psycopg",
    "psycopg2": "postgresql+psycopg2",
    "asyncpg": "postgresql+asyncpg",  # the usual FastAPI URL
}


def in_form(url: str, form: str) -> str:
    """``url`` (the test database's) written in ``form``: only the scheme changes, so
    the embedded backend's unix-socket URL (``?host=/path``) carries over."""
    return make_url(url).set(drivername=FORMS[form]).render_as_string(hide_password=False)
