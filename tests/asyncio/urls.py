"""The test database's URL with an asyncio driver (see :mod:`tests.backends`)."""

from __future__ import annotations

from ..backends import ASYNC_DRIVERS as DRIVERS
from ..backends import async_url

__all__ = ["DRIVERS", "async_url"]
