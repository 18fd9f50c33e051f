"""The overview's throughput chart: bars computed here, drawn as SVG by the template.

No script and no chart library: each part of the window is one stacked bar
(completed below, failed on top), scaled to the tallest, with its figures in a
``<title>`` (the tooltip) so the chart reads without colours too.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._stats import Throughput

__all__ = ["Bar", "Chart", "throughput_chart"]

#: The drawing's size, in SVG units.
WIDTH = 480
HEIGHT = 96


@dataclass(frozen=True)
class Bar:
    """One part of the window: where its two rectangles go and what they count."""

    x: float
    width: float
    completed: int
    failed: int
    completed_height: float
    failed_height: float
    #: How long ago the part began and ended, in minutes.
    from_minutes: int
    to_minutes: int


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: tuple[Bar, ...]
    #: The tallest bar's jobs (the scale); 0 when nothing finished.
    peak: int
    window_minutes: int


def throughput_chart(throughput: Throughput) -> Chart:
    """The bars of ``throughput``, oldest on the left."""
    count = len(throughput.completed)
    totals = [c + f for c, f in zip(throughput.completed, throughput.failed, strict=True)]
    peak = max(totals)
    slot = WIDTH / count
    minutes = throughput.bucket_seconds / 60

    def height(jobs: int) -> float:
        return round(HEIGHT * jobs / peak, 1) if peak else 0.0

    bars = tuple(
        Bar(
            x=round(index * slot + 1, 1),
            width=round(slot - 2, 1),
            completed=completed,
            failed=failed,
            completed_height=height(completed),
            failed_height=height(failed),
            from_minutes=round((count - index) * minutes),
            to_minutes=round((count - index - 1) * minutes),
        )
        for index, (completed, failed) in enumerate(
            zip(throughput.completed, throughput.failed, strict=True)
        )
    )
    return Chart(WIDTH, HEIGHT, bars, peak, round(throughput.window_seconds / 60))
