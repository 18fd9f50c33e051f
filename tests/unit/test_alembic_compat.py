"""What programma_sa.migrations._alembic_compat relies on in Alembic, checked against the
installed release: these tests fail if Alembic changes it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from programma_sa import migrations
from programma_sa.migrations._alembic_compat import set_version_locations

from ..helpers import chain_steps

ENV_PY = """
from alembic import context
from programma_sa.migrations._alembic_compat import destination, running_command

context.config.attributes["seen"] = (running_command(context), destination(context))
"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """A script directory with one revision of its own and an env.py that only looks."""
    (tmp_path / "env.py").write_text(ENV_PY)
    (tmp_path / "script.py.mako").write_text("")
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "own_1.py").write_text(
        textwrap.dedent(
            """
            revision = "own_1"
            down_revision = None
            branch_labels = None
            depends_on = None

            def upgrade():
                pass

            def downgrade():
                pass
            """
        )
    )
    config = Config()
    config.set_main_option("script_location", str(tmp_path))
    return config


def test_new_version_locations_are_read_even_after_the_revisions_were(config: Config) -> None:
    script = ScriptDirectory.from_config(config)
    assert [revision.revision for revision in script.walk_revisions()] == ["own_1"]
    own = str(Path(script.dir, "versions"))
    set_version_locations(script, [own, migrations.version_location()])
    steps = chain_steps()
    assert steps[:2] == ["programma_0001", "programma_0002"]
    assert {revision.revision for revision in script.walk_revisions()} == {"own_1", *steps}
    assert set(script.get_heads()) == {"own_1", steps[-1]}


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        (lambda config: command.downgrade(config, "-1"), ("downgrade", "-1")),
        (lambda config: command.upgrade(config, "heads"), ("upgrade", "heads")),
        (lambda config: command.current(config), ("display_version", None)),
    ],
    ids=["downgrade", "upgrade", "current"],
)
def test_env_py_can_tell_the_command_and_its_destination(
    config: Config, run: object, expected: tuple[str, str | None]
) -> None:
    run(config)  # type: ignore[operator]
    assert config.attributes["seen"] == expected
