"""What a run puts into a member's input of the network's member list (issue 19).

Runs before the ``run-member-roster-by-reference`` patch copied the whole list
into every member's input (``network_members``); their histories replay that
way. Since the patch the input carries a :class:`~engine.domain.roster.RosterRef`
naming this run, the list's size and digest, and the member's steps read the
list once per worker: from what the run's ``acquire_network`` returned in its
history, else from its ``roster`` query (``activities/roster.py``).
"""

from __future__ import annotations

from temporalio import workflow

from engine.domain.roster import RosterRef, roster_ref
from workflows.run_patches import PATCH_ROSTER_BY_REFERENCE


def member_roster(run_instance: str, members: list[str]) -> tuple[list[str], RosterRef | None]:
    """The member list and the roster reference a member's input carries (one is empty)."""
    if not workflow.patched(PATCH_ROSTER_BY_REFERENCE):
        return members, None
    return [], roster_ref(workflow.info().workflow_id, run_instance, members)
