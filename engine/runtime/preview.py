"""Plan a run before starting it, from the live network, as the run itself will.

``meshfleet plan --network`` and ``meshfleet run start`` read the network's
members (names from the network workflow; versions, labels, windows and
global services from the clusters through the workers' backend, with the same
activities the run uses), then plan on this side with the same pure planner.
A plan the rules refuse is refused here, every problem at once, before
anything is started.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, field

from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError

from engine.domain.errors import FieldError, InvalidInputError, UnavailableError
from engine.domain.failures import failure_text
from engine.domain.member import Member
from engine.domain.plan import Plan
from engine.domain.preview import (
    PLAN_INPUTS_WORKFLOW,
    PlanInputs,
    PlanInputsRequest,
    plan_inputs_workflow_id,
)
from engine.domain.strategy import UpdateStrategy
from engine.domain.versions import Version
from engine.runtime.client import MeshfleetClient
from strategies import ReleaseCatalog, plan
from strategies.continuity import (
    ServiceCopies,
    UndrainableMember,
    copies_from_backend,
    undrainable_members,
)
from workflows.run_status import one_by_one_strategy

#: How long the read may take before the caller hears that no worker answered.
READ_TIMEOUT = dt.timedelta(seconds=60)


async def pollers(client: Client, task_queue: str) -> int:
    """How many workers polled ``task_queue`` for workflow tasks recently (Temporal's view)."""
    try:
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
    except RPCError as error:
        raise UnavailableError(
            f"task queue {task_queue!r}: Temporal answered {error.status.name}: {error.message}"
        ) from None
    return len(response.pollers)


def no_worker_message(task_queue: str) -> str:
    """What to say when nothing polls the workers' task queue."""
    return (
        f"no worker polls task queue {task_queue!r}: start one with 'meshfleet worker' "
        "(or name the queue the workers poll with MESHFLEET_TASK_QUEUE)"
    )


async def read_plan_inputs(client: MeshfleetClient, network: str) -> PlanInputs:
    """The network's members as the clusters report them, and their global services."""
    if await pollers(client.temporal, client.task_queue) == 0:
        raise UnavailableError(no_worker_message(client.task_queue))
    described = await client.describe_network(network)
    names = [member.name for member in described.members]
    if not names:
        raise InvalidInputError(
            [
                FieldError(
                    path="--network",
                    message=f"network {network!r} has no members: nothing to update "
                    f"(join some with: meshfleet network join {network} --member NAME)",
                )
            ]
        )
    try:
        inputs: PlanInputs = await client.temporal.execute_workflow(
            PLAN_INPUTS_WORKFLOW,
            PlanInputsRequest(members=names),
            id=plan_inputs_workflow_id(network, secrets.token_hex(6)),
            task_queue=client.task_queue,
            result_type=PlanInputs,
            execution_timeout=READ_TIMEOUT,
            static_summary=f"read network {network}'s members and services to plan a run",
        )
    except WorkflowFailureError as error:
        raise UnavailableError(
            f"could not read network {network!r}'s members: {failure_text(error)}"
        ) from None
    except RPCError as error:
        raise UnavailableError(
            f"network {network!r}: Temporal answered {error.status.name}: {error.message}"
        ) from None
    return inputs


@dataclass(frozen=True)
class PlanPreview:
    """A plan, and the members the continuity rule would never let drain."""

    plan: Plan
    undrainable: list[UndrainableMember] = field(default_factory=list)
    #: The strategy says to start anyway (``health.allowUndrainableMembers``).
    undrainable_allowed: bool = False

    def to_json_dict(self) -> dict[str, object]:
        """The plan's JSON with the flagged members under ``undrainable``."""
        return {
            **self.plan.to_json_dict(),
            "undrainable": [u.to_json_dict() for u in self.undrainable],
        }

    def refusals(self) -> list[FieldError]:
        """Why ``run start`` and ``simulate`` refuse this plan (empty: they accept it)."""
        if self.undrainable_allowed:
            return []
        return [
            FieldError(
                path=f"members.{u.member}",
                message=f"{u}; the run would wait for it and give up (fix the service, or "
                "set spec.health.allowUndrainableMembers: true in the strategy to start anyway)",
            )
            for u in self.undrainable
        ]


def preview(
    members: list[Member],
    services: list[ServiceCopies],
    strategy: UpdateStrategy | None,
    target: Version,
    catalog: ReleaseCatalog,
    now: dt.datetime,
    *,
    allow_multi_minor: bool = False,
) -> PlanPreview:
    """Plan as the run will (no strategy: one by one); flag members that cannot drain."""
    chosen = strategy or one_by_one_strategy(members)
    result = plan(members, chosen, target, catalog, now, allow_multi_minor=allow_multi_minor)
    health = chosen.spec.health
    return PlanPreview(
        plan=result,
        undrainable=undrainable_members(result, services, health.min_ready_endpoints),
        undrainable_allowed=health.allow_undrainable_members,
    )


async def preview_network(
    client: MeshfleetClient,
    network: str,
    strategy: UpdateStrategy | None,
    target: Version,
    catalog: ReleaseCatalog,
    *,
    allow_multi_minor: bool = False,
    now: dt.datetime | None = None,
) -> PlanPreview:
    """The plan a run of ``network`` would execute now, from the live members."""
    inputs = await read_plan_inputs(client, network)
    return preview(
        inputs.members,
        copies_from_backend(inputs.services),
        strategy,
        target,
        catalog,
        now or dt.datetime.now(dt.UTC),
        allow_multi_minor=allow_multi_minor,
    )


__all__ = [
    "PlanPreview",
    "no_worker_message",
    "pollers",
    "preview",
    "preview_network",
    "read_plan_inputs",
]
