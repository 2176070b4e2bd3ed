"""The bundled demo of ``meshfleet demo``: a fleet file and a strategy, shipped as package data."""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

#: The demo's files inside this package.
FLEET = "fleet.yaml"
STRATEGY = "strategy.yaml"
#: The demo upgrades every member to this Kubernetes version.
TARGET = "1.33"


def demo_file(name: str) -> Path:
    """The path of a bundled demo file (the package is installed as plain files)."""
    with as_file(files(__name__) / name) as path:
        return Path(path)
