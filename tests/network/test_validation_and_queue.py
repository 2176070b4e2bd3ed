"""Rules that need no I/O reject before history; a holding update run queues membership changes."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.worker import Worker

from activities.backends.simulated import SimulatedFleetBackend
from engine.domain.names import MAX_NETWORK_MEMBERS
from engine.domain.network import (
    NETWORK_WORKFLOW,
    QUERY_DESCRIBE,
    UPDATE_ACQUIRE,
    UPDATE_JOIN,
    UPDATE_RELEASE,
    MembershipOutcome,
    NetworkDescription,
    NetworkInput,
    NetworkMember,
    NetworkRequestError,
    NetworkState,
    NetworkStatus,
    OperationResult,
    network_workflow_id,
)
from engine.domain.network_requests import AcquireRequest, JoinRequest, ReleaseRequest
from engine.runtime import networks
from engine.runtime.client import MeshfleetClient
from tests.network.conftest import SETTINGS, cluster, fleet, joined_events
from tests.polling import eventually

UPDATE_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ADMITTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_REJECTED,
}


async def update_events(handle: WorkflowHandle[object, object]) -> list[EventType.ValueType]:
    """Every update-related event in the workflow's history."""
    history = await handle.fetch_history()
    return [e.event_type for e in history.events if e.event_type in UPDATE_EVENTS]


async def test_the_256th_member_is_rejected_by_the_validator_and_leaves_no_trace_in_history(
    client: Client, worker: Worker, meshfleet: MeshfleetClient, task_queue: str, network_name: str
) -> None:
    """A network of 255 (as continue-as-new would carry it) refuses one more, before history."""
    now = dt.datetime.now(dt.UTC)
    full = NetworkState(
        name=network_name,
        uid=uuid.uuid4().hex,
        created_at=now,
        status=NetworkStatus.CONNECTED,
        members=[
            NetworkMember(name=f"m-{i}", cluster_id=i, joined_at=now, operation="op-1")
            for i in range(1, MAX_NETWORK_MEMBERS + 1)
        ],
    )
    handle = await client.start_workflow(
        NETWORK_WORKFLOW,
        NetworkInput(name=network_name, settings=SETTINGS, state=full),
        id=network_workflow_id(network_name),
        task_queue=task_queue,
    )
    await handle.query(QUERY_DESCRIBE, result_type=NetworkDescription)  # first task done

    with pytest.raises(NetworkRequestError, match="at most 255 members"):
        await meshfleet.join(network_name, ["one-too-many"])

    assert await update_events(handle) == []
    described = await meshfleet.describe_network(network_name)
    assert len(described.members) == MAX_NETWORK_MEMBERS
    assert described.pending == []


@pytest.mark.parametrize(
    ("members", "message"),
    [
        (["b", "b"], "appears more than once"),
        (["a"], "already a member"),
        (["Not_A_Name"], "lowercase alphanumerics"),
        (["default"], "reserved by Cilium"),
        ([], "at least one cluster"),
    ],
)
async def test_a_join_breaking_a_rule_without_io_is_rejected_before_history(
    backend: SimulatedFleetBackend,
    worker: Worker,
    client: Client,
    meshfleet: MeshfleetClient,
    network_name: str,
    members: list[str],
    message: str,
) -> None:
    """Duplicates, existing members and bad names never reach the workflow's history."""
    backend.load(fleet([cluster("a", 1), cluster("b", 2)]))
    await meshfleet.create_network(network_name, ["a"], settings=SETTINGS)
    handle = client.get_workflow_handle(network_workflow_id(network_name))
    before = await update_events(handle)

    with pytest.raises(NetworkRequestError, match=message):
        # Straight to the workflow, past the client's own checks, to prove the validator.
        await networks.network_update(
            client, network_name, UPDATE_JOIN, JoinRequest(members=members), OperationResult
        )

    assert await update_events(handle) == before


async def test_removing_a_cluster_that_is_not_a_member_is_rejected_before_history(
    backend: SimulatedFleetBackend, worker: Worker, meshfleet: MeshfleetClient, network_name: str
) -> None:
    """The validator knows the members; nothing is queued."""
    backend.load(fleet([cluster("a", 1), cluster("b", 2)]))
    await meshfleet.create_network(network_name, ["a"], settings=SETTINGS)

    with pytest.raises(NetworkRequestError, match="'b' is not a member"):
        await meshfleet.remove(network_name, ["b"])

    assert (await meshfleet.describe_network(network_name)).pending == []


async def test_a_join_queued_behind_a_holding_update_run_runs_when_it_is_released(
    backend: SimulatedFleetBackend,
    worker: Worker,
    client: Client,
    meshfleet: MeshfleetClient,
    network_name: str,
) -> None:
    """The run is neither aborted nor the request lost: it waits, says so, and runs on release."""
    backend.load(fleet([cluster("a", 1), cluster("b", 2), cluster("c", 3)]))
    await meshfleet.create_network(network_name, ["a", "b"], settings=SETTINGS)
    handle = client.get_workflow_handle(network_workflow_id(network_name))

    held = await handle.execute_update(
        UPDATE_ACQUIRE, AcquireRequest(run_id="run-1"), result_type=NetworkDescription
    )
    assert held.holder == "run-1"
    again = await handle.execute_update(
        UPDATE_ACQUIRE, AcquireRequest(run_id="run-1"), result_type=NetworkDescription
    )
    assert again.holder == "run-1"  # idempotent for the same run
    with pytest.raises(WorkflowUpdateFailedError) as rejected:
        await handle.execute_update(
            UPDATE_ACQUIRE, AcquireRequest(run_id="run-2"), result_type=NetworkDescription
        )
    assert "held by update run 'run-1'" in str(rejected.value.cause)

    queued = await meshfleet.join(network_name, ["c"])

    assert queued.queued
    assert queued.holder == "run-1"
    assert [(m.cluster, m.outcome) for m in queued.members] == [("c", MembershipOutcome.QUEUED)]
    assert "runs when the run releases it" in (queued.message or "")
    described = await meshfleet.describe_network(network_name)
    assert described.holder == "run-1"
    assert [(p.kind.value, p.members, p.queued_behind) for p in described.pending] == [
        ("join", ["c"], "run-1")
    ]
    assert joined_events(backend, "c") == []

    not_holder = await handle.execute_update(
        UPDATE_RELEASE, ReleaseRequest(run_id="run-2"), result_type=NetworkDescription
    )
    assert not_holder.holder == "run-1"  # releasing by a non-holder changes nothing
    released = await handle.execute_update(
        UPDATE_RELEASE, ReleaseRequest(run_id="run-1"), result_type=NetworkDescription
    )
    assert released.holder is None

    async def joined() -> bool:
        described = await meshfleet.describe_network(network_name)
        done = described.current is None and not described.pending
        return done and [m.name for m in described.members] == ["a", "b", "c"]

    await eventually(joined, what="the queued join to run")
    described = await meshfleet.describe_network(network_name)
    assert described.status is NetworkStatus.CONNECTED
    assert len(joined_events(backend, "c")) == 1
    assert {"accepted", "released", "finished"} <= {e.event for e in described.log}


async def test_acquire_waits_for_a_join_in_flight_and_queued_operations_stay_queued(
    backend: SimulatedFleetBackend,
    worker: Worker,
    client: Client,
    meshfleet: MeshfleetClient,
    network_name: str,
) -> None:
    """The lock: a run takes the network only between membership operations."""
    import asyncio

    from engine.domain.fleet import Fault, FaultKind, FaultTrigger

    backend.load(fleet([cluster("a", 1), cluster("b", 2), cluster("c", 3)]))
    await meshfleet.create_network(network_name, ["a"], settings=SETTINGS)
    handle = client.get_workflow_handle(network_workflow_id(network_name))
    # Enabling the mesh on b takes about a second of wall time.
    backend.add_fault("b", Fault(kind=FaultKind.SLOW, on=FaultTrigger.JOIN, factor=100))

    join_b = asyncio.create_task(meshfleet.join(network_name, ["b"]))

    async def in_flight() -> bool:
        return (await meshfleet.describe_network(network_name)).current is not None

    await eventually(in_flight, what="the join to start")
    join_c = asyncio.create_task(meshfleet.join(network_name, ["c"]))

    async def c_pending() -> bool:
        return bool((await meshfleet.describe_network(network_name)).pending)

    await eventually(c_pending, what="the second join to be queued")
    held = await handle.execute_update(
        UPDATE_ACQUIRE, AcquireRequest(run_id="run-1"), result_type=NetworkDescription
    )

    assert [m.name for m in held.members] == ["a", "b"]  # b's join finished first
    assert held.current is None
    assert [p.members for p in held.pending] == [["c"]]
    assert (await join_b).members[0].outcome is MembershipOutcome.JOINED
    assert (await join_c).queued

    await handle.execute_update(
        UPDATE_RELEASE, ReleaseRequest(run_id="run-1"), result_type=NetworkDescription
    )

    async def c_joined() -> bool:
        described = await meshfleet.describe_network(network_name)
        return [m.name for m in described.members] == ["a", "b", "c"]

    await eventually(c_joined, what="c to join after the release")
