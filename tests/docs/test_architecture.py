"""The architecture page stays true: every file it names exists, and the README links it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "architecture.md"
#: A backticked path of ours: `engine/...`, `workflows/x.py`, `_mesh.py` (a sibling of the last).
PATH = re.compile(r"`((?:meshfleet|engine|workflows|activities|strategies|tests)/[\w/.]*)`")


def _named_paths(text: str) -> list[str]:
    return PATH.findall(text)


def test_every_file_the_architecture_page_names_exists() -> None:
    named = _named_paths(PAGE.read_text())
    missing = [path for path in named if not (ROOT / path).exists()]
    assert len(named) > 40
    assert missing == []


def test_every_kubernetes_part_the_page_names_exists_beside_the_backend() -> None:
    text = PAGE.read_text()
    parts = re.findall(r"`(_\w+\.py)`", text)
    folder = ROOT / "activities" / "backends" / "kubernetes"
    assert parts
    assert [part for part in parts if not (folder / part).exists()] == []


def test_the_page_checker_notices_a_file_that_moved() -> None:
    assert _named_paths("see `workflows/no_such_file.py` and `engine/domain/`") == [
        "workflows/no_such_file.py",
        "engine/domain/",
    ]
    assert not (ROOT / "workflows/no_such_file.py").exists()


def test_the_readme_links_the_architecture_page() -> None:
    assert "docs/architecture.md" in (ROOT / "README.md").read_text()
