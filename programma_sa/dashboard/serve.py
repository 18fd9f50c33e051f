"""``programma-sa dashboard``: the dashboard served alone, by uvicorn, for a quick look.

Nobody signs in to it: bound to 127.0.0.1 by default, every action is allowed unless
``--read-only``. Behind an application's own authentication, mount it instead
(``docs/dashboard.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import uvicorn
from sqlalchemy import Table
from sqlalchemy.engine import URL

from .._engines import create_library_engine
from ..queue import JobQueue
from ..schedules import Schedule
from .app import Dashboard
from .asgi import asgi_app

__all__ = ["serve"]


def _anyone(request: object, action: str) -> bool:
    return True


def serve(
    url: URL,
    table: Table,
    *,
    host: str,
    port: int,
    read_only: bool,
    schedules: Sequence[Schedule] = (),
) -> None:
    """Serve the dashboard of ``table`` at ``http://host:port/`` until interrupted."""
    engine = create_library_engine(url, pool_size=5)
    dashboard = Dashboard(
        JobQueue(table), engine, permission=_anyone, read_only=read_only, schedules=schedules
    )
    try:
        uvicorn.run(asgi_app(dashboard), host=host, port=port, log_level="warning")
    finally:
        dashboard.close()
        engine.dispose()
