"""docs/integrations.md cannot go stale: every code block in it is tested.

* A ``python`` or ``ini`` block starts with a comment naming a file in ``examples/``
  and the rest of it is a verbatim run of that file's lines.
* Every line of a ``bash`` block is one of the commands the example tests run
  (each of which checks, in turn, that the guide still shows it).
"""

from __future__ import annotations

import re
from pathlib import Path

from . import test_celery_fanout, test_flask_example
from .support import GUIDE, REPO

FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
TESTED_COMMANDS = {*test_flask_example.COMMANDS, *test_celery_fanout.COMMANDS}


def blocks() -> list[tuple[str, list[str]]]:
    return [(lang, body.splitlines()) for lang, body in FENCE.findall(GUIDE.read_text())]


def is_excerpt(lines: list[str], source: list[str]) -> bool:
    return any(source[start : start + len(lines)] == lines for start in range(len(source)))


def test_the_guide_has_code_blocks_of_known_kinds() -> None:
    kinds = {lang for lang, _ in blocks()}
    assert kinds == {"python", "ini", "bash"}


def test_every_python_and_ini_block_is_an_excerpt_of_an_example_file() -> None:
    excerpts = [(lang, lines) for lang, lines in blocks() if lang in ("python", "ini")]
    assert excerpts
    for _, (header, *lines) in excerpts:
        assert header.startswith("# examples/"), f"block does not name its file: {header}"
        path = REPO / header.removeprefix("# ")
        assert path.is_file(), f"{header}: no such file"
        assert lines, f"{header}: empty excerpt"
        assert is_excerpt(lines, Path(path).read_text().splitlines()), (
            f"{header}: the excerpt is not (or no longer) in the file:\n" + "\n".join(lines)
        )


def test_every_shell_command_is_run_by_a_test() -> None:
    shown = [line for lang, lines in blocks() if lang == "bash" for line in lines if line]
    assert shown
    assert set(shown) <= TESTED_COMMANDS, set(shown) - TESTED_COMMANDS
    # ...and the reverse: every command the tests run is shown.
    assert set(shown) >= TESTED_COMMANDS, TESTED_COMMANDS - set(shown)
