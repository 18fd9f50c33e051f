"""The public path of the asyncio worker (:mod:`programma_sa.worker.async_driver`)."""

from .worker.async_driver import AsyncHandler, AsyncJobContext, AsyncWorker

__all__ = ["AsyncHandler", "AsyncJobContext", "AsyncWorker"]
