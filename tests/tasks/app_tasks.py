"""A registry for the tests (and the CLI's subprocess): a plain and an async task,
each writing a note on an order, so another process's work is seen in the table."""

from __future__ import annotations

from programma_sa import JobQueue, TaskRegistry

from ..app import Job, Order

registry = TaskRegistry(JobQueue(Job))


@registry.task(topic="notes.plain")
def note_plain(order: Order, note: str) -> None:
    order.note = note


@registry.task(topic="notes.async")
async def note_async(order: Order, note: str) -> None:
    order.note = note
