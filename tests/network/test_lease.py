"""The network's hold is a lease: it ends with its holder's execution, however that ends."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from activities.backends.simulated import SimulatedFleetBackend
from activities.network import HolderActivities, NetworkActivities
from activities.run_steps import RunStepActivities
from engine.domain.fleet import Fault, FaultKind, FaultTrigger
from engine.domain.network import MembershipOutcome, NetworkDescription
from engine.domain.run import State
from engine.runtime.client import MeshfleetClient
from engine.runtime.worker import build_worker
from tests.network.conftest import POLL, SETTINGS, cluster, fleet
from tests.network.holder import END_SIGNAL, LeaseHolderWorkflow
from tests.polling import eventually
from tests.runs.harness import Cluster, running_fleet, strategy, wait_until
from workflows.network import NetworkWorkflow

HANG = {"kind": "hang", "on": "controlPlaneUpgrade"}


async def _freed_and_removed(
    meshfleet: MeshfleetClient, network: str, removed: str
) -> NetworkDescription:
    """Wait on the network's described state: no holder, and the queued removal done."""
    described: NetworkDescription | None = None

    async def done() -> bool:
        nonlocal described
        described = await meshfleet.describe_network(network)
        names = [m.name for m in described.members]
        return described.holder is None and removed not in names and not described.pending

    await eventually(done, timeout=30, what=f"the hold to end and {removed} to be removed")
    assert described is not None
    return described


async def test_a_terminated_run_frees_its_network_and_a_queued_removal_then_runs(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    clusters = [Cluster("a-1", group="a", faults=[HANG]), Cluster("b-1", group="a")]
    plan = strategy([{"name": "all", "groups": [{"name": "a"}]}])
    async with running_fleet(client, task_queue, state_dir, clusters) as fleet_:
        meshfleet = MeshfleetClient(client, task_queue=task_queue)
        run = await fleet_.start_run(plan)
        await wait_until(run, lambda s: s.state is State.RUNNING and s.plan_hash is not None)

        async def held() -> bool:
            return (await meshfleet.describe_network(fleet_.network)).holder is not None

        await eventually(held, what="the run to hold the network")
        queued = await meshfleet.remove(fleet_.network, ["b-1"])
        assert queued.queued

        await client.get_workflow_handle(run.workflow_id).terminate("operator gave up")

        described = await _freed_and_removed(meshfleet, fleet_.network, "b-1")
        ended = [e for e in described.log if e.event == "leaseEnded"]
        assert ended
        assert "terminated" in ended[0].message


@pytest_asyncio.fixture(loop_scope="session")
async def holder_worker(
    client: Client, task_queue: str, backend: SimulatedFleetBackend
) -> AsyncIterator[Worker]:
    """The network, its activities, the holder watch, and a stand-in run that holds it."""
    update = RunStepActivities(backend, client)
    async with build_worker(
        client,
        task_queue,
        workflows=[NetworkWorkflow, LeaseHolderWorkflow],
        activities=[
            *NetworkActivities(backend, poll_interval=POLL).all(),
            *HolderActivities(client).all(),
            update.acquire_network,
        ],
    ) as running:
        yield running


async def _held_by_a_stand_in(
    client: Client,
    meshfleet: MeshfleetClient,
    backend: SimulatedFleetBackend,
    network: str,
    task_queue: str,
    **options: object,
) -> WorkflowHandle[LeaseHolderWorkflow, str]:
    backend.load(fleet([cluster("a", 1), cluster("b", 2)]))
    await meshfleet.create_network(network, ["a", "b"], settings=SETTINGS)
    holder = await client.start_workflow(
        LeaseHolderWorkflow.run,
        args=[network, "r1"],
        id=f"updaterun/{network}/r1",
        task_queue=task_queue,
        **options,  # type: ignore[arg-type]
    )

    async def held() -> bool:
        return (await meshfleet.describe_network(network)).holder == "r1"

    await eventually(held, what="the stand-in run to hold the network")
    assert (await meshfleet.remove(network, ["b"])).queued
    return holder


@pytest.mark.parametrize("how", ["fail", "complete"])
async def test_a_run_that_fails_or_completes_without_releasing_frees_its_network(
    how: str,
    client: Client,
    task_queue: str,
    backend: SimulatedFleetBackend,
    holder_worker: Worker,
    meshfleet: MeshfleetClient,
    network_name: str,
) -> None:
    holder = await _held_by_a_stand_in(client, meshfleet, backend, network_name, task_queue)
    await holder.signal(END_SIGNAL, how)
    described = await _freed_and_removed(meshfleet, network_name, "b")
    ended = [e for e in described.log if e.event == "leaseEnded"]
    assert ended
    assert ("failed" if how == "fail" else "completed") in ended[0].message


async def test_a_cancelled_run_frees_its_network(
    client: Client,
    task_queue: str,
    backend: SimulatedFleetBackend,
    holder_worker: Worker,
    meshfleet: MeshfleetClient,
    network_name: str,
) -> None:
    holder = await _held_by_a_stand_in(client, meshfleet, backend, network_name, task_queue)
    await holder.cancel()
    described = await _freed_and_removed(meshfleet, network_name, "b")
    assert any("canceled" in e.message for e in described.log if e.event == "leaseEnded")


async def test_a_run_that_times_out_frees_its_network(
    client: Client,
    task_queue: str,
    backend: SimulatedFleetBackend,
    holder_worker: Worker,
    meshfleet: MeshfleetClient,
    network_name: str,
) -> None:
    holder = await _held_by_a_stand_in(
        client,
        meshfleet,
        backend,
        network_name,
        task_queue,
        execution_timeout=dt.timedelta(seconds=4),
    )
    described = await _freed_and_removed(meshfleet, network_name, "b")
    assert any("timed out" in e.message for e in described.log if e.event == "leaseEnded")
    assert holder.id.endswith("/r1")


async def test_an_acquire_granted_after_its_run_ended_is_no_phantom_hold(
    client: Client,
    task_queue: str,
    backend: SimulatedFleetBackend,
    holder_worker: Worker,
    meshfleet: MeshfleetClient,
    network_name: str,
) -> None:
    """A run's acquire waits behind a join in flight; the run is terminated meanwhile; the
    join finishes and the network grants the acquire to a run that is gone: the hold ends
    at once and the queue moves on."""
    backend.load(fleet([cluster("a", 1), cluster("b", 2), cluster("c", 3)]))
    await meshfleet.create_network(network_name, ["a"], settings=SETTINGS)
    backend.add_fault("b", Fault(kind=FaultKind.HANG, on=FaultTrigger.JOIN))
    joining = asyncio.create_task(meshfleet.join(network_name, ["b"]))

    async def join_hangs() -> bool:
        current = (await meshfleet.describe_network(network_name)).current
        return current is not None and current.members == ["b"]

    await eventually(join_hangs, what="the join of b to be in flight")
    holder = await client.start_workflow(
        LeaseHolderWorkflow.run,
        args=[network_name, "r1"],
        id=f"updaterun/{network_name}/r1",
        task_queue=task_queue,
    )

    async def acquire_waits() -> bool:
        pending = (await holder.describe()).raw_description.pending_activities
        return any(p.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED for p in pending)

    await eventually(acquire_waits, what="the run's acquire to wait for the join")
    await holder.terminate("gave up waiting for the network")
    queued_removal = asyncio.create_task(meshfleet.remove(network_name, ["a"]))
    backend.clear_faults("b")
    assert [m.outcome for m in (await joining).members] == [MembershipOutcome.JOINED]

    described = await _freed_and_removed(meshfleet, network_name, "a")
    events = [e.event for e in described.log]
    assert "acquired" in events
    assert "leaseEnded" in events
    assert events.index("leaseEnded") > events.index("acquired")
    # Its caller heard "removed", or "queued" behind the brief phantom grant: either way
    # the removal ran (above).
    assert (await queued_removal).operation


async def test_a_reset_run_keeps_its_hold_and_frees_it_when_the_new_run_ends(
    client: Client,
    task_queue: str,
    backend: SimulatedFleetBackend,
    holder_worker: Worker,
    meshfleet: MeshfleetClient,
    network_name: str,
) -> None:
    """A reset closes the holding run and goes on in a new run of the same chain, which
    still holds the network: the watch follows it, and the hold ends when that run does."""
    holder = await _held_by_a_stand_in(client, meshfleet, backend, network_name, task_queue)
    history = await holder.fetch_history()
    acquired = next(
        e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
    )
    after_acquire = next(
        e.event_id
        for e in history.events
        if e.event_id > acquired and e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    )
    reset = await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=holder.id, run_id=holder.run_id),
            reason="test: reset past the acquire",
            workflow_task_finish_event_id=after_acquire,
            request_id=str(uuid.uuid4()),
        )
    )
    new_run = client.get_workflow_handle(holder.id, run_id=reset.run_id)
    await new_run.signal(END_SIGNAL, "complete")
    await new_run.result()

    described = await _freed_and_removed(meshfleet, network_name, "b")
    ended = [e.message for e in described.log if e.event == "leaseEnded"]
    assert len(ended) == 1, ended
    assert "completed" in ended[0]
