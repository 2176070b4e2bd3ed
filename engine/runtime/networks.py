"""Networks from the client's side: create, join, remove, delete, describe, list and release.

Each network is one long-lived workflow (``network/<name>``); membership
changes and operator actions are Temporal Updates on it, its description a
Query. Names and member lists are checked here before anything reaches
Temporal, and Temporal's errors come back as ``engine.domain.errors``
exceptions with a sentence for a person.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from engine.domain import search_attributes
from engine.domain.errors import MeshfleetError, NotFoundError, UnavailableError
from engine.domain.membership import member_list_problems
from engine.domain.model import DomainModel
from engine.domain.network import (
    NETWORK_SEARCH_ATTRIBUTE,
    NETWORK_WORKFLOW,
    QUERY_DESCRIBE,
    UPDATE_CLEAR_DRAINED,
    UPDATE_DELETE,
    UPDATE_JOIN,
    UPDATE_OPERATION,
    UPDATE_OPERATOR_RELEASE,
    UPDATE_REMOVE,
    UPDATE_SERVICES,
    DeleteResult,
    JoinResult,
    NetworkDescription,
    NetworkExistsError,
    NetworkInput,
    NetworkRequestError,
    NetworkSettings,
    NetworkSummary,
    OperationResult,
    RemoveResult,
    network_name_problem,
    network_workflow_id,
)
from engine.domain.network_requests import (
    ClearDrainedRequest,
    DeleteRequest,
    JoinRequest,
    OperationRequest,
    OperatorReleaseRequest,
    RemoveRequest,
    ServicesRequest,
)
from engine.domain.services import ServicesReport
from engine.runtime import runs
from engine.runtime import settings as runtime_settings

T = TypeVar("T")

NETWORK_KEY = search_attributes.NETWORK
#: ``list_networks`` asks each network for its status; one that does not answer
#: within this (no worker running) is listed without it.
LIST_QUERY_TIMEOUT = timedelta(seconds=5)


def default_network_settings() -> NetworkSettings:
    """A new network's settings, from the runtime settings (environment)."""
    return NetworkSettings(
        mesh_ready_timeout=runtime_settings.mesh_ready_timeout(),
        degraded_recheck_interval=runtime_settings.degraded_recheck_interval(),
    )


def _check_network_name(name: str) -> None:
    problem = network_name_problem(name)
    if problem:
        raise NetworkRequestError(problem)


def _check_members(members: Sequence[str]) -> None:
    problems = member_list_problems(members)
    if problems:
        raise NetworkRequestError("; ".join(problems))


def _recorded_problems(reason: str, who: str, *, why: str, who_does: str) -> list[str]:
    """What is wrong with the reason and the identity an operator action records."""
    problems = []
    if not reason.strip():
        problems.append(f"reason: say why {why} (it is recorded)")
    elif len(reason) > 1000:
        problems.append("reason: at most 1000 characters")
    if not who:
        problems.append(f"by: name who {who_does} (it is recorded)")
    elif len(who) > 200:
        problems.append("by: at most 200 characters")
    return problems


def _network_error(name: str, error: BaseException) -> MeshfleetError:
    """Temporal's errors about a network, as one sentence for a person."""
    if isinstance(error, MeshfleetError):
        return error
    if isinstance(error, WorkflowUpdateFailedError):
        cause = error.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(cause)
        return NetworkRequestError(message)
    if isinstance(error, RPCError):
        if error.status is RPCStatusCode.NOT_FOUND:
            return NotFoundError(f"network {name!r} does not exist")
        if error.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
            return UnavailableError(f"Temporal is unavailable: {error.message}")
        return UnavailableError(f"Temporal refused the request: {error.message}")
    return MeshfleetError(f"{type(error).__name__}: {error}")


async def create_network(
    temporal: Client,
    task_queue: str,
    name: str,
    members: Sequence[str] = (),
    *,
    settings: NetworkSettings | None = None,
) -> JoinResult | None:
    """Start the network's workflow and join ``members`` through the same join path.

    Returns the initial join's result (None when created empty). Raises
    :class:`NetworkExistsError` when a network of that name is running.
    """
    _check_network_name(name)
    if members:
        _check_members(members)
    network_input = NetworkInput(name=name, settings=settings or default_network_settings())
    options: dict[str, Any] = {
        "id": network_workflow_id(name),
        "task_queue": task_queue,
        "id_conflict_policy": WorkflowIDConflictPolicy.FAIL,
        "search_attributes": TypedSearchAttributes([SearchAttributePair(NETWORK_KEY, name)]),
        "static_summary": f"Cross-cluster network {name}",
        "static_details": (
            f"Network **{name}**: a Cilium ClusterMesh of up to 255 clusters. "
            "Membership changes run here as updates (join, remove, delete); "
            "update runs take it with acquire and give it back with release."
        ),
    }
    if not members:
        try:
            await temporal.start_workflow(NETWORK_WORKFLOW, network_input, **options)
        except WorkflowAlreadyStartedError:
            raise NetworkExistsError(name) from None
        except Exception as error:
            raise _network_error(name, error) from None
        return None
    start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
        NETWORK_WORKFLOW, network_input, **options
    )
    try:
        result: JoinResult = await temporal.execute_update_with_start_workflow(
            UPDATE_JOIN,
            JoinRequest(members=list(members)),
            start_workflow_operation=start,
            result_type=OperationResult,
        )
    except WorkflowAlreadyStartedError:
        with contextlib.suppress(Exception):  # the start's own copy of the same error
            await start.workflow_handle()
        raise NetworkExistsError(name) from None
    except Exception as error:
        raise _network_error(name, error) from None
    return result


async def join_members(temporal: Client, name: str, members: Sequence[str]) -> JoinResult:
    """Join clusters; per member: joined, rejected (with the rule), failed, or queued."""
    _check_network_name(name)
    _check_members(members)
    result: JoinResult = await network_update(
        temporal, name, UPDATE_JOIN, JoinRequest(members=list(members)), OperationResult
    )
    return await _followed(temporal, name, result)


async def remove_members(temporal: Client, name: str, members: Sequence[str]) -> RemoveResult:
    """Remove members (drained first, then disconnected); queued while a run holds it."""
    _check_network_name(name)
    _check_members(members)
    result: RemoveResult = await network_update(
        temporal, name, UPDATE_REMOVE, RemoveRequest(members=list(members)), OperationResult
    )
    return await _followed(temporal, name, result)


async def delete_network(temporal: Client, name: str, *, force: bool = False) -> DeleteResult:
    """Delete an empty network (or, with ``force``, remove every member first)."""
    _check_network_name(name)
    result: DeleteResult = await network_update(
        temporal, name, UPDATE_DELETE, DeleteRequest(force=force), OperationResult
    )
    return await _followed(temporal, name, result)


async def describe_network(temporal: Client, name: str) -> NetworkDescription:
    """Members, ids, status, holder, pending operations and the recent log."""
    _check_network_name(name)
    handle = await _running_network(temporal, name)
    try:
        described: NetworkDescription = await handle.query(
            QUERY_DESCRIBE, result_type=NetworkDescription
        )
    except Exception as error:
        raise _network_error(name, error) from None
    return described


async def list_networks(temporal: Client) -> list[NetworkSummary]:
    """Every running network, found by its search attribute, with its status."""
    query = (
        f'WorkflowType = "{NETWORK_WORKFLOW}" AND ExecutionStatus = "Running" '
        f"AND {NETWORK_SEARCH_ATTRIBUTE} IS NOT NULL"
    )
    found: list[NetworkSummary] = []
    try:
        async for execution in temporal.list_workflows(query):
            name = execution.typed_search_attributes.get(NETWORK_KEY)
            if name is None:
                continue
            found.append(NetworkSummary(name=name, started_at=execution.start_time))
    except RPCError as error:
        raise _network_error("", error) from None

    async def status(summary: NetworkSummary) -> NetworkSummary:
        handle = temporal.get_workflow_handle(network_workflow_id(summary.name))
        try:
            described: NetworkDescription = await handle.query(
                QUERY_DESCRIBE, result_type=NetworkDescription, rpc_timeout=LIST_QUERY_TIMEOUT
            )
        except Exception:  # a network no worker answers for is still listed
            return summary
        return summary.model_copy(
            update={
                "status": described.status,
                "members": len(described.members),
                "holder": described.holder,
                "pending": len(described.pending),
            }
        )

    summaries = await asyncio.gather(*(status(s) for s in found))
    return sorted(summaries, key=lambda s: s.name)


async def network_services(temporal: Client, name: str) -> ServicesReport:
    """Every global service of the members, with endpoints per cluster and flagged mistakes."""
    _check_network_name(name)
    report: ServicesReport = await network_update(
        temporal, name, UPDATE_SERVICES, ServicesRequest(), ServicesReport
    )
    return report


async def release_network(
    temporal: Client, name: str, reason: str, *, identity: str | None = None
) -> NetworkDescription:
    """Free a network whose holding update run is gone (refused while that run runs).

    Recorded in the network's log with ``identity`` (``user@host`` by default)
    and ``reason``.
    """
    _check_network_name(name)
    who = (identity if identity is not None else runs.default_identity()).strip()
    problems = _recorded_problems(
        reason, who, why="the network is released", who_does="releases the network"
    )
    if problems:
        raise NetworkRequestError("; ".join(problems))
    request = OperatorReleaseRequest(identity=who, reason=reason.strip())
    released: NetworkDescription = await network_update(
        temporal, name, UPDATE_OPERATOR_RELEASE, request, NetworkDescription
    )
    return released


async def clear_drained(
    temporal: Client, name: str, member: str, reason: str, *, identity: str | None = None
) -> NetworkDescription:
    """Clear ``member`` from the network's left-drained list (recorded with who and why)."""
    _check_network_name(name)
    who = (identity if identity is not None else runs.default_identity()).strip()
    problems = []
    if not member.strip():
        problems.append("member: name the member listed as left drained")
    elif len(member) > 200:
        problems.append("member: at most 200 characters")
    problems += _recorded_problems(
        reason, who, why="the member is cleared", who_does="clears the member"
    )
    if problems:
        raise NetworkRequestError("; ".join(problems))
    request = ClearDrainedRequest(member=member.strip(), identity=who, reason=reason.strip())
    cleared: NetworkDescription = await network_update(
        temporal, name, UPDATE_CLEAR_DRAINED, request, NetworkDescription
    )
    return cleared


async def _followed(temporal: Client, name: str, result: OperationResult) -> OperationResult:
    """The operation's result, asked of the network's next run when it continued as new."""
    while result.continued:
        result = await network_update(
            temporal, name, UPDATE_OPERATION, OperationRequest(id=result.operation), OperationResult
        )
    return result


async def _running_network(temporal: Client, name: str) -> WorkflowHandle[Any, Any]:
    handle = temporal.get_workflow_handle(network_workflow_id(name))
    try:
        description = await handle.describe()
    except Exception as error:
        raise _network_error(name, error) from None
    if description.status is not WorkflowExecutionStatus.RUNNING:
        raise NotFoundError(f"network {name!r} does not exist (it was deleted)")
    return handle


async def network_update(
    temporal: Client, name: str, update: str, request: DomainModel, result_type: type[T]
) -> T:
    """Send ``update`` to the running network with no checks of its own (its validator decides)."""
    handle = await _running_network(temporal, name)
    try:
        result: T = await handle.execute_update(update, request, result_type=result_type)
    except Exception as error:
        raise _network_error(name, error) from None
    return result
