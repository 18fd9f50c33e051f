"""A web dashboard that mounts inside the application (see ``docs/dashboard.md``).

:class:`Dashboard` holds the configuration (the queue, the engine or session
factory, the host's permission hook, the read-only flag, the schedules); the
framework adapters serve it:

* :func:`programma_sa.dashboard.asgi.asgi_app` — a Starlette app for FastAPI or
  Starlette (needs the ``dashboard`` extra);
* :func:`programma_sa.dashboard.blueprint.blueprint` — a Flask blueprint;
* ``programma-sa dashboard --database-url …`` serves it alone (uvicorn).

Pages are rendered on the server (Jinja2) and readable with JavaScript off; a
vendored htmx refreshes them live, from server-sent events fed by LISTEN, with
polling as the fallback. Actions are POSTs behind a CSRF check and the host's
permission hook; the table of them is :data:`programma_sa.dashboard.actions.ACTIONS`.
"""

from __future__ import annotations

from .actions import ACTIONS, Action
from .app import VIEW, Dashboard, Permission

__all__ = ["ACTIONS", "VIEW", "Action", "Dashboard", "Permission"]
