"""What a plan needs from live clusters: the members as they are, and their global services.

``meshfleet plan --network`` and ``meshfleet run start`` read these through the
worker's backend (a short workflow on the workers' task queue, as the run
itself reads them), then plan on the client with the same pure planner.
"""

from __future__ import annotations

from pydantic import Field

from engine.domain.member import Member
from engine.domain.model import DomainModel
from engine.domain.services import GlobalService

PLAN_INPUTS_WORKFLOW = "ReadPlanInputs"


def plan_inputs_workflow_id(network: str, token: str) -> str:
    """``planinputs/<network>/<token>``: one short-lived read per plan."""
    return f"planinputs/{network}/{token}"


class PlanInputsRequest(DomainModel):
    """The members to read (names only: the worker resolves them to clusters)."""

    members: list[str]


class PlanInputs(DomainModel):
    """The members with their real versions, labels and windows, and their global services."""

    members: list[Member] = Field(default_factory=list)
    services: list[GlobalService] = Field(default_factory=list)
