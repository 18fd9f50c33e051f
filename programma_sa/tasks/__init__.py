"""Tasks: typed task functions over the queue, one worker for many of them.

* :mod:`.registry` — :class:`TaskRegistry` and :class:`Task`: declare, enqueue;
* :mod:`.arguments` and :mod:`.codecs` — a call as a job's JSON document, and back;
* :mod:`.unique` — :class:`Unique`: a key derived from chosen arguments of each call;
* :mod:`.dispatch` — the handlers a worker runs for a registry;
* :mod:`.hooks` — before/after/on-failure hooks, contained;
* :mod:`.tracing` — OpenTelemetry (optional).

See ``docs/tasks.md``.
"""

from __future__ import annotations

from .hooks import Hook, TaskRun
from .registry import JobOptions, Task, TaskRegistry
from .unique import Unique

__all__ = ["Hook", "JobOptions", "Task", "TaskRegistry", "TaskRun", "Unique"]
