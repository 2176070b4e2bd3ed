"""Networks that outlive the code that started them: patched changes keep old networks alive."""

from __future__ import annotations

import datetime as dt

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import TimeSkipper
from temporalio.worker import Worker

from activities.backends.simulated import SimulatedFleetBackend
from engine.domain.fleet import Fault, FaultKind, FaultTrigger
from engine.domain.network import (
    NETWORK_WORKFLOW,
    UPDATE_JOIN,
    NetworkStatus,
    OperationResult,
    network_workflow_id,
)
from engine.domain.network_requests import JoinRequest
from engine.runtime.client import MeshfleetClient
from tests.network.conftest import cluster, fleet
from tests.polling import eventually


async def test_a_network_started_before_the_degraded_recheck_still_heals_on_todays_code(
    backend: SimulatedFleetBackend,
    client: Client,
    worker: Worker,
    meshfleet: MeshfleetClient,
    task_queue: str,
    network_name: str,
    time_skipping: TimeSkipper,
) -> None:
    """An input without ``degradedRecheckInterval`` (written before 036ed40) takes the
    patched path: live, the patch applies, so the network still re-reads and heals."""
    backend.load(fleet([cluster("a", 1), cluster("b", 2), cluster("cut", 3)]))
    old_input = {
        "name": network_name,
        "settings": {"meshReadyTimeout": "2s", "heartbeatTimeout": "2s", "logLimit": 100},
        "state": None,
    }
    handle = await time_skipping.client.start_workflow(
        NETWORK_WORKFLOW,
        old_input,
        id=network_workflow_id(network_name),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
    )
    await handle.execute_update(UPDATE_JOIN, JoinRequest(members=["a", "b"]))
    backend.add_fault("cut", Fault(kind=FaultKind.MESH_PARTITION, on=FaultTrigger.JOIN))
    joined = await handle.execute_update(
        UPDATE_JOIN, JoinRequest(members=["cut"]), result_type=OperationResult
    )
    assert joined.status is NetworkStatus.DEGRADED
    backend.clear_faults("cut")

    async def connected() -> bool:
        return (await meshfleet.describe_network(network_name)).status is NetworkStatus.CONNECTED

    # The input has no interval: the default (5m) applies, skipped on the virtual clock.
    await time_skipping.fast_forward(handle, dt.timedelta(minutes=6))
    await eventually(connected, timeout=30, what="the old network to heal")
    history = await handle.fetch_history()
    markers = [e for e in history.events if e.HasField("marker_recorded_event_attributes")]
    assert markers, "the re-check ran behind its patch marker"
