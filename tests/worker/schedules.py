"""Schedules that worker subprocesses run (``--schedules tests.worker.schedules:TICKS``).

Every-second intervals keep the process tests to seconds. ``grace`` is wider than
the 1 s default so that a pass delayed by a loaded machine still counts as on time.
"""

from __future__ import annotations

from programma_sa import Schedule

TICKS = [Schedule("tick", "ticks", every=1, grace=3)]

#: The same fire times under both missed-fire policies.
RESTART = [
    Schedule("skip", "ticks", every=1, grace=2),
    Schedule("catch-up-2", "ticks", every=1, grace=2, catch_up=2),
]

NOT_SCHEDULES = [42]
