"""Every Python code block of the README and the guides runs, so none can go stale.

A page's blocks run in order in one namespace (later blocks use what earlier ones
defined), with ``DATABASE_URL`` naming a fresh database of the page's own in which
the jobs table exists. Like doctest's globals, the namespace starts with a few
names a guide may use without defining them (see :func:`prelude`). Top-level
``await`` works; a page's blocks share one event loop. A block
that cannot run here (an ``env.py`` fragment, a sketch calling your own services)
is preceded by ``<!-- not-run: why -->`` on the line before its fence, and the
reason is required.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from programma_sa import JobQueue, migrations
from programma_sa.testing import fresh_database

from ..app import Job

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"(?P<before>[^\n]*)\n```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)\n```", re.S)
_NOT_RUN = re.compile(r"<!--\s*not-run:\s*(?P<why>.*?)\s*-->")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    language: str
    code: str
    not_run_reason: str | None


def blocks(page: Path) -> list[Block]:
    text = "\n" + page.read_text()
    found = []
    for match in _FENCE.finditer(text):
        reason = _NOT_RUN.search(match["before"])
        found.append(
            Block(
                page=page,
                line=text.count("\n", 0, match.start("lang")),
                language=match["lang"],
                code=match["body"],
                not_run_reason=None if reason is None else reason["why"],
            )
        )
    return found


def python_pages() -> list[Path]:
    return [page for page in PAGES if any(b.language == "python" for b in blocks(page))]


@pytest.fixture
def page_database(admin_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with fresh_database(admin_url, prefix="programma_docs") as url:
        monkeypatch.setenv("DATABASE_URL", url)
        yield url


def prelude(url: str) -> dict[str, Any]:
    """What a guide may use undefined: the tests' Job model, its queue, an engine."""
    return {
        "DATABASE_URL": url,
        "Job": Job,
        "Session": Session,
        "engine": create_engine(url),
        "queue": JobQueue(Job),
    }


@pytest.mark.parametrize("page", python_pages(), ids=lambda page: page.relative_to(ROOT).as_posix())
def test_python_blocks_run(page: Path, page_database: str) -> None:
    # A real module, so SQLAlchemy can resolve the blocks' Mapped[...] annotations.
    module = types.ModuleType(f"docs_page_{page.stem.lower()}")
    sys.modules[module.__name__] = module
    namespace: dict[str, Any] = module.__dict__
    migrations.upgrade(page_database)
    namespace.update(prelude(page_database))
    loop = asyncio.new_event_loop()
    try:
        for block in blocks(page):
            if block.language != "python" or block.not_run_reason is not None:
                continue
            name = f"{page.relative_to(ROOT)}:{block.line}"
            code = compile(block.code, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            result = eval(code, namespace)
            if inspect.iscoroutine(result):
                loop.run_until_complete(result)
    finally:
        loop.close()
        for value in namespace.values():
            if isinstance(value, Engine):
                value.dispose()
        del sys.modules[module.__name__]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_skipped_blocks_say_why(page: Path) -> None:
    for block in blocks(page):
        if block.not_run_reason is not None:
            assert block.not_run_reason.strip(), f"{page}:{block.line}: not-run needs a reason"
