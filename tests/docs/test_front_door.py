"""The README and the site's home page tell one story and lead to every page.

* The README's sections come in the order a newcomer needs them: what it is, try it,
  install, the tasks quickstart (the main path), the layer under it, the API, the
  guides, the tests, the layout.
* Its "Try it" shows the two commands the project promises: the demo (the first
  command of the README, run by tests/packaging) and the test suite.
* Its guides list, and the home page's "Where to go next", link every page of the
  site's navigation once.
"""

from __future__ import annotations

import re

from .test_code_blocks import ROOT, blocks

README = ROOT / "README.md"
INDEX = ROOT / "docs" / "index.md"
#: The README's sections, in order.
README_SECTIONS = [
    "Why",
    "Try it: the demo and the test suite",
    "Install",
    "Quickstart: tasks",
    "The layer under it: the queue and handlers",
    "The API at a glance",
    "Guides",
    "Tests",
    "Layout",
]
VENV = "python3 -m venv .venv && . .venv/bin/activate && "
DEMO = VENV + 'pip install -e ".[embedded]" && programma-sa demo'
TESTS = VENV + 'pip install -e ".[test]" && pytest'


def nav_pages() -> list[str]:
    """Every page of mkdocs.yml's navigation (``  - Title: page.md``), in its order."""
    config = (ROOT / "mkdocs.yml").read_text()
    nav = config[config.index("\nnav:\n") : config.index("\nplugins:")]
    return re.findall(r"^  - [^:]+: ([\w-]+\.md)$", nav, re.M)


def section(text: str, title: str) -> str:
    """The text of a ``## title`` section, up to the next ``## `` heading."""
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : None if end == -1 else end]


def linked_pages(text: str, prefix: str) -> list[str]:
    """The ``.md`` pages that ``text`` links to (under ``prefix``), anchors dropped."""
    return re.findall(rf"\]\({re.escape(prefix)}([\w-]+\.md)", text)


def test_the_readme_sections_come_in_the_newcomers_order() -> None:
    assert re.findall(r"^## (.+)$", README.read_text(), re.M) == README_SECTIONS


def test_try_it_shows_the_demo_first_and_then_the_test_command() -> None:
    commands = [b.code for b in blocks(README) if b.language == "bash"]
    assert commands[:2] == [DEMO, TESTS]
    try_it = section(README.read_text(), README_SECTIONS[1])
    assert DEMO in try_it and TESTS in try_it


def test_the_readme_guides_link_every_page_of_the_site_once() -> None:
    linked = linked_pages(section(README.read_text(), "Guides"), "docs/")
    assert sorted(linked) == sorted(nav_pages())
    # ...in the site's order.
    assert linked[:-1] == [page for page in nav_pages() if page != "index.md"]


def test_the_home_page_leads_to_every_other_page_once() -> None:
    linked = linked_pages(section(INDEX.read_text(), "Where to go next"), "")
    assert linked == [page for page in nav_pages() if page != "index.md"]


def test_the_home_page_shows_the_same_two_commands() -> None:
    assert [b.code for b in blocks(INDEX) if b.language == "bash"][:2] == [DEMO, TESTS]
