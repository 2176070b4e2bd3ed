"""Workers die; runs do not: SIGKILLed workers, and replays of recorded histories."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities.backends.simulated import FaultRecord, SimulatedFleetBackend
from engine.domain import run as contract
from engine.domain.fleet import Fault, FaultKind, FaultTrigger, parse_fleet
from engine.domain.run import State
from engine.domain.runspec import RunSpec
from engine.runtime import devserver
from engine.runtime.runs import start_update_run
from engine.runtime.worker import all_workflows, workflow_runner
from strategies import parse_strategy
from tests.polling import eventually
from tests.runs.harness import (
    TIMINGS,
    Cluster,
    create_network,
    fleet_document,
    running_fleet,
    strategy,
    wait_until,
)
from tests.worker_process import worker_process


def hung_operation(backend: SimulatedFleetBackend, fault: FaultRecord) -> Any:
    """The operation ``fault`` holds running, once one has started and met it."""
    held = [op for op in backend.world().operations.values() if op.hung_by == fault.id]
    return held[0] if held else None


def started(backend: SimulatedFleetBackend, event: str) -> Counter[str]:
    """How many ``event`` audit entries each cluster has."""
    return Counter(e.cluster for e in backend.audit() if e.event.value == event)


async def test_sigkilled_workers_leave_every_control_plane_upgraded_exactly_once(
    client: Client, temporal_server: devserver.EmbeddedServer, task_queue: str, state_dir: Path
) -> None:
    """Each worker is killed while an upgrade it started is held running by a ``hang``
    fault, so every kill lands mid-operation; the retried activity finds its operation
    again instead of starting a second one."""
    clusters = [Cluster(f"crash-{i}", group="all") for i in range(1, 4)]
    backend = SimulatedFleetBackend(state_dir)
    backend.load(parse_fleet(fleet_document(clusters)))
    control_plane = backend.add_fault(
        "crash-1", Fault(kind=FaultKind.HANG, on=FaultTrigger.CONTROL_PLANE_UPGRADE)
    )
    cilium = backend.add_fault(
        "crash-2", Fault(kind=FaultKind.HANG, on=FaultTrigger.CILIUM_UPGRADE)
    )
    timings = TIMINGS.model_copy(update={"heartbeat_timeout": dt.timedelta(seconds=2)})
    address = temporal_server.address
    async with worker_process(address, task_queue, state_dir) as first:
        await create_network(client, task_queue, "crashes", [c.name for c in clusters])
        spec = RunSpec(
            network="crashes",
            kubernetes_version="1.33",
            strategy=parse_strategy(strategy([{"name": "all", "groups": [{"name": "all"}]}])),
        )
        run = await start_update_run(client, task_queue, spec, timings=timings)
        await eventually(
            lambda: hung_operation(backend, control_plane),
            what="crash-1's control-plane upgrade to be held running",
        )
        first.kill()
        await first.wait()
    # Killed in the middle of crash-1's control-plane upgrade, before anything else began.
    held = hung_operation(backend, control_plane)
    assert held is not None
    assert held.cluster == "crash-1"
    assert held.finished is None, "the operation had finished before the kill"
    assert started(backend, "controlPlaneUpgradeStarted") == {"crash-1": 1}
    backend.clear_faults(fault_id=control_plane.id)

    async with worker_process(address, task_queue, state_dir) as second:
        await eventually(
            lambda: hung_operation(backend, cilium),
            what="crash-2's Cilium upgrade to be held running",
        )
        second.kill()
        await second.wait()
    # Killed in the middle of crash-2's Cilium upgrade, crash-3 not yet begun.
    held = hung_operation(backend, cilium)
    assert held is not None
    assert held.cluster == "crash-2"
    assert held.finished is None, "the operation had finished before the kill"
    assert started(backend, "ciliumUpgradeStarted") == {"crash-1": 1, "crash-2": 1}
    assert "crash-3" not in started(backend, "controlPlaneUpgradeStarted")
    backend.clear_faults(fault_id=cilium.id)

    async with worker_process(address, task_queue, state_dir):
        status = await run.result()
    assert status.state is State.COMPLETED, status.error
    everyone = {"crash-1": 1, "crash-2": 1, "crash-3": 1}
    assert started(backend, "controlPlaneUpgradeStarted") == everyone
    assert started(backend, "ciliumUpgradeStarted") == everyone


async def test_recorded_run_and_member_histories_replay_deterministically(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    clusters = [Cluster("replay-1", group="a"), Cluster("replay-2", group="b")]
    document = strategy(
        [
            {"name": "a", "groups": [{"name": "a"}], "afterStageWait": "1s"},
            {"name": "b", "beforeGates": [{"type": "Approval"}], "groups": [{"name": "b"}]},
        ]
    )
    async with running_fleet(client, task_queue, state_dir, clusters) as fleet:
        run = await fleet.start_run(document)
        await wait_until(run, lambda s: any(g.state.value == "Pending" for g in s.gates()))
        await run.approve("b/before/0")
        status = await run.result()
        assert status.state is State.COMPLETED
        ids = [run.workflow_id] + [
            contract.member_workflow_id(fleet.network, status.run_id, m.name)
            for _, _, m in status.members()
        ]
        histories = [await client.get_workflow_handle(i).fetch_history() for i in ids]
    replayer = Replayer(
        workflows=all_workflows(),
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    for history in histories:
        assert len(history.events) > 5
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{history.workflow_id}: {result.replay_failure}"
