"""How a member's restore ended (the member workflow's own record of it).

A module of its own so that the worker passes it through the workflow sandbox
(``engine.runtime.worker.PASSTHROUGH_MODULES``): the sandbox runs a workflow's
module anew for every workflow it creates, and defining a dataclass was the
costliest line of ``member_update.py`` for each of a run's members (issue 19).
Plain data only: no workflow API, no state shared between workflows.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Restored:
    """How a restore ended: services it could not put back, a problem, notes to report."""

    left_drained: list[str] = field(default_factory=list)
    problem: str | None = None
    notes: list[str] = field(default_factory=list)
