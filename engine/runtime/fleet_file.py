"""Reading a simulated-fleet file (``kind: SimulatedFleet``) from disk.

The model and its rules are the domain's (:mod:`engine.domain.fleet`), which
does no I/O; the CLI and the simulation read the user's file here.
"""

from __future__ import annotations

from pathlib import Path

from engine.domain.fleet import SimulatedFleet, parse_fleet
from strategies.files import read_document

__all__ = ["load_fleet"]


def load_fleet(path: Path) -> SimulatedFleet:
    """Read and validate a fleet file; every problem at once as InvalidInputError."""
    return parse_fleet(read_document(path), source=str(path))
