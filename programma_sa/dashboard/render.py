"""The templates: Jinja2 with autoescaping on for every template.

Every value a page shows goes through Jinja2's HTML escaping — a job whose data
holds ``<script>`` shows it as text. Nothing is marked safe.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

__all__ = ["render"]

_ENVIRONMENT = Environment(
    loader=PackageLoader("programma_sa.dashboard", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _pretty(value: Any) -> str:
    """A JSON value, indented (escaped like any other text when rendered)."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _when(value: datetime | None) -> str:
    return "—" if value is None else value.isoformat(sep=" ", timespec="seconds")


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


_ENVIRONMENT.filters.update(pretty=_pretty, when=_when, seconds=_seconds)


def render(template: str, **context: Any) -> bytes:
    """The page ``template`` with ``context``, as UTF-8."""
    return _ENVIRONMENT.get_template(template).render(**context).encode()
