"""kmock's private code is reached from one module only, for the kmock it was written for."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
#: Imports of kmock's internals, and overrides or uses of the private hooks patched.
PRIVATE = re.compile(
    r"kmock\._internal|def _(handle|serve_list|serve_server_version|render_error)\b|\._requests\b"
)


def test_only_kmock_patches_touches_kmock_private_code() -> None:
    """A kmock upgrade can break what is private: it is all in one module, to re-check there."""
    offenders = [
        path.name
        for path in sorted(HERE.glob("*.py"))
        if path.name not in ("kmock_patches.py", Path(__file__).name)
        and PRIVATE.search(path.read_text())
    ]

    assert offenders == []
    assert PRIVATE.search((HERE / "kmock_patches.py").read_text())


def test_the_installed_kmock_is_the_one_the_patches_were_written_for() -> None:
    """pyproject pins kmock to 0.8.x, and that is what runs these tests."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dev = pyproject["project"]["optional-dependencies"]["dev"]

    assert "kmock>=0.8,<0.9" in dev
    assert version("kmock").split(".")[:2] == ["0", "8"]
