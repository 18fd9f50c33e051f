"""Queue statistics as text: a table for people, JSON for machines, Prometheus text.

Pure functions of a :class:`~programma_sa.maintenance.QueueStats` (no database, no
printing): ``programma-sa stats`` prints what :func:`render_stats` returns.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any

from .._stats import QueueStats, TopicStats
from ..exceptions import InvalidJobInput
from .metric_families import exposition, metric_families

__all__ = ["FORMATS", "render_stats"]

#: The formats :func:`render_stats` writes.
FORMATS = ("table", "json", "prometheus")

_COLUMNS = [field.name for field in fields(TopicStats)]


def _cell(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def _table(stats: QueueStats) -> str:
    title = (
        f"{stats.table} at {stats.measured_at.isoformat()} "
        f"(*_recently: the last {_cell(stats.window_seconds)}s)"
    )
    if not stats.topics:
        return f"{title}\nno jobs\n"
    rows = [_COLUMNS] + [
        [_cell(getattr(topic, name)) for name in _COLUMNS] for topic in stats.topics
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = [
        "  ".join(
            # The topic left-aligned, the numbers right-aligned.
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    return "\n".join([title, *lines]) + "\n"


def _json(stats: QueueStats) -> str:
    document = asdict(stats)
    document["measured_at"] = stats.measured_at.isoformat()
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def render_stats(stats: QueueStats, format: str = "table") -> str:
    """``stats`` as ``"table"`` (aligned text), ``"json"`` or ``"prometheus"`` text."""
    if format == "table":
        return _table(stats)
    if format == "json":
        return _json(stats)
    if format == "prometheus":
        return exposition(metric_families(stats))
    raise InvalidJobInput(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
