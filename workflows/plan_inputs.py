"""Read what a plan needs from the clusters, through the worker's backend.

The update run reads its members with the same activity before it plans;
this workflow lets the client do that read first, so ``meshfleet plan
--network`` and ``run start`` see exactly the members and versions the run
will see. It only reads: no cluster is touched.
"""

from __future__ import annotations

from temporalio import workflow

from engine.domain import run as contract
from engine.domain.member import Member
from engine.domain.network_activities import (
    ACTIVITY_LIST_SERVICES,
    GlobalServices,
    ListServicesInput,
)
from engine.domain.preview import PLAN_INPUTS_WORKFLOW, PlanInputs, PlanInputsRequest
from workflows.policies import QUICK_READ, READ_RETRY


@workflow.defn(name=PLAN_INPUTS_WORKFLOW)
class ReadPlanInputsWorkflow:
    """Describe the members and list their global services; return both."""

    @workflow.run
    async def run(self, request: PlanInputsRequest) -> PlanInputs:
        if not request.members:
            return PlanInputs()
        members: list[Member] = await workflow.execute_activity(
            contract.DESCRIBE_MEMBERS,
            contract.DescribeMembersRequest(members=request.members),
            result_type=list[Member],
            start_to_close_timeout=QUICK_READ,
            retry_policy=READ_RETRY,
            summary="read the members",
        )
        services: GlobalServices = await workflow.execute_activity(
            ACTIVITY_LIST_SERVICES,
            ListServicesInput(members=request.members),
            result_type=GlobalServices,
            start_to_close_timeout=QUICK_READ,
            retry_policy=READ_RETRY,
            summary="read the global services",
        )
        return PlanInputs(members=members, services=services.services)
