"""Durability: a worker killed mid-join, and replaying recorded histories."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities.backends.simulated import SimulatedFleetBackend
from engine.domain.backend import OperationKind, OperationState
from engine.domain.fleet import Fault, FaultKind, FaultTrigger
from engine.domain.network import (
    UPDATE_ACQUIRE,
    UPDATE_RELEASE,
    MembershipOutcome,
    NetworkDescription,
    NetworkStatus,
    network_workflow_id,
)
from engine.domain.network_requests import AcquireRequest, ReleaseRequest
from engine.runtime import devserver
from engine.runtime.client import MeshfleetClient
from engine.runtime.connection import ConnectionSettings, connect_client
from engine.runtime.worker import workflow_runner
from tests.network.conftest import (
    SETTINGS,
    cluster,
    fleet,
    joined_events,
    network_worker,
)
from tests.polling import eventually
from tests.worker_process import worker_process
from workflows.network import NetworkWorkflow

#: The worker polls the simulated operations every 50 ms instead of every second.
POLL_FAST = {"MESHFLEET_POLL_INTERVAL": "50ms"}


async def test_sigkilling_the_worker_mid_join_then_a_new_one_completes_the_join_exactly_once(
    backend: SimulatedFleetBackend,
    client: Client,
    meshfleet: MeshfleetClient,
    temporal_server: devserver.EmbeddedServer,
    task_queue: str,
    state_dir: Path,
    network_name: str,
) -> None:
    """The retried activity reuses its idempotency key: the audit shows one memberJoined."""
    backend.load(fleet([cluster("a", 1), cluster("b", 2), cluster("slow", 3)]))
    # Enabling the mesh on "slow" is held running until the fault is cleared: the kill
    # lands in the middle of the join every time.
    hang = backend.add_fault("slow", Fault(kind=FaultKind.HANG, on=FaultTrigger.JOIN))
    address = temporal_server.address

    def enabling() -> Any:
        """The mesh enablement on "slow" the fault holds running (None: not started yet)."""
        held = [op for op in backend.world().operations.values() if op.hung_by == hang.id]
        return held[0] if held else None

    async with worker_process(address, task_queue, state_dir, env=POLL_FAST) as first:
        await meshfleet.create_network(network_name, ["a", "b"], settings=SETTINGS)
        join = asyncio.create_task(meshfleet.join(network_name, ["slow"]))
        await eventually(enabling, what="the join to be enabling the mesh on 'slow'")
        first.send_signal(signal.SIGKILL)
        await first.wait()
        assert first.returncode == -signal.SIGKILL
    held = enabling()
    assert held.kind is OperationKind.ENABLE_MESH
    assert held.state is OperationState.RUNNING, "the join had finished before the kill"
    assert not joined_events(backend, "slow")
    assert not join.done()
    backend.clear_faults(fault_id=hang.id)

    async with worker_process(address, task_queue, state_dir, env=POLL_FAST):
        result = await asyncio.wait_for(join, timeout=60)

    assert [(m.cluster, m.outcome) for m in result.members] == [("slow", MembershipOutcome.JOINED)]
    assert result.status is NetworkStatus.CONNECTED
    assert len(joined_events(backend, "slow")) == 1
    enables = [
        op
        for op in backend.world().operations.values()
        if op.cluster == "slow" and op.kind is OperationKind.ENABLE_MESH
    ]
    assert len(enables) == 1


async def test_recorded_histories_replay_without_nondeterminism(
    backend: SimulatedFleetBackend,
    client: Client,
    meshfleet: MeshfleetClient,
    task_queue: str,
    network_name: str,
) -> None:
    """Create, reject, queue behind a run, remove, services and delete: every history replays."""
    backend.load(
        fleet(
            [
                cluster("a", 1),
                cluster("b", 2),
                cluster("c", 3),
                cluster("tunnel", 4, networkMode="overlay"),
            ],
            services=[{"namespace": "shop", "name": "cart", "clusters": {"a": 1, "b": 1}}],
        )
    )
    other = f"{network_name}-other"
    async with network_worker(client, task_queue, backend):
        await meshfleet.create_network(network_name, ["a", "b", "tunnel"], settings=SETTINGS)
        handle = client.get_workflow_handle(network_workflow_id(network_name))
        await handle.execute_update(
            UPDATE_ACQUIRE, AcquireRequest(run_id="run-1"), result_type=NetworkDescription
        )
        assert (await meshfleet.join(network_name, ["c"])).queued
        await handle.execute_update(
            UPDATE_RELEASE, ReleaseRequest(run_id="run-1"), result_type=NetworkDescription
        )
        await meshfleet.remove(network_name, ["a"])
        await meshfleet.network_services(network_name)
        await meshfleet.delete_network(network_name, force=True)
        await meshfleet.create_network(other, settings=SETTINGS)
        histories = [
            await client.get_workflow_handle(network_workflow_id(name)).fetch_history()
            for name in (network_name, other)
        ]

    replayer = Replayer(
        workflows=[NetworkWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    for history in histories:
        await replayer.replay_workflow(history)
    assert len(histories[0].events) > 20


async def test_a_network_that_continues_as_new_keeps_its_members_holder_and_queue(
    backend: SimulatedFleetBackend, tmp_path: Path, task_queue: str, network_name: str
) -> None:
    """On a server that suggests continue-as-new early, the state crosses runs whole."""
    server = await devserver.start_embedded_server(
        tmp_path / "early-can",
        grpc_port=None,
        ui_port=None,
        ui=False,
        dynamic_config={"limit.historyCount.suggestContinueAsNew": "40"},
    )
    try:
        own = await connect_client(server.address, ConnectionSettings(address=server.address))
        meshfleet = MeshfleetClient(own, task_queue=task_queue)
        backend.load(fleet([cluster("a", 1), cluster("b", 2)]))
        async with network_worker(own, task_queue, backend):
            await meshfleet.create_network(network_name, ["a"], settings=SETTINGS)
            handle = own.get_workflow_handle(network_workflow_id(network_name))
            first_run = (await handle.describe()).run_id
            acquire = AcquireRequest(run_id="run-1")
            await handle.execute_update(UPDATE_ACQUIRE, acquire, result_type=NetworkDescription)
            assert (await meshfleet.join(network_name, ["b"])).queued
            for _ in range(15):  # idempotent re-acquires: history grows, nothing changes
                await handle.execute_update(UPDATE_ACQUIRE, acquire, result_type=NetworkDescription)

            async def continued() -> bool:
                return (await handle.describe()).run_id != first_run

            await eventually(continued, what="the network to continue as new")
            carried = await meshfleet.describe_network(network_name)
            assert [m.name for m in carried.members] == ["a"]
            assert carried.holder == "run-1"
            assert [p.members for p in carried.pending] == [["b"]]

            await handle.execute_update(
                UPDATE_RELEASE, ReleaseRequest(run_id="run-1"), result_type=NetworkDescription
            )

            async def b_joined() -> bool:
                described = await meshfleet.describe_network(network_name)
                return [m.name for m in described.members] == ["a", "b"] and not described.pending

            await eventually(b_joined, what="the queued join to run in the new run")
            assert len(joined_events(backend, "b")) == 1
    finally:
        server.stop()
