"""docs/alembic.md shows the commands tests/migration runs, as they run them: the guide
cannot drift from what is tested."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "alembic.md"

#: Each command of the guide's shell blocks, and the test that runs it.
TESTED = {
    # One head: test_one_head.py, test_flask_migrate.py.
    "programma-sa alembic revision": "test_one_head",
    "programma-sa alembic revision --directory migrations": "test_flask_migrate",
    "alembic upgrade head": "test_one_head",
    'alembic revision --autogenerate -m "add invoices"': "test_one_head, test_branch",
    "alembic downgrade -1": "test_one_head",
    "alembic history": "test_one_head, test_branch",
    "flask db upgrade": "test_flask_migrate",
    'flask db migrate -m "add invoices"': "test_flask_migrate",
    "flask db downgrade": "test_flask_migrate",
    "flask db history": "test_flask_migrate",
    # The branch: test_branch.py, test_flask_migrate.py.
    "alembic upgrade heads": "test_branch",
    "alembic downgrade app@-1": "test_branch",
    "flask db upgrade heads": "test_flask_migrate",
    "flask db downgrade app@-1": "test_flask_migrate",
}


def shell_lines() -> set[str]:
    blocks = re.findall(r"```bash\n(.*?)\n```", GUIDE.read_text(), re.S)
    return {line.split("#")[0].strip() for block in blocks for line in block.splitlines()}


@pytest.mark.parametrize("command", sorted(TESTED))
def test_the_guide_shows_each_tested_command(command: str) -> None:
    assert command in shell_lines()


def test_every_command_the_guide_shows_is_tested() -> None:
    assert shell_lines() - {""} <= set(TESTED)
