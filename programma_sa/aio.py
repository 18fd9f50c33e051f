"""The older import path of :mod:`programma_sa.async_queue` (kept for existing imports)."""

from .async_queue import AsyncJobQueue

__all__ = ["AsyncJobQueue"]
