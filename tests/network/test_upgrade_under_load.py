"""meshfleet upgraded under a live network and a run in flight (issue 15).

A worker of the earlier build runs a network and an update run; one member's
control-plane upgrade hangs (a simulator fault), so the moment the worker
stops is known: mid-run, with the network held and a join queued behind the
run. A worker of a later build, whose workflow code carries a patched change
(``tests/network/upgraded.py``), takes over: it replays what the earlier build
recorded, the run and the network finish, and the simulator's audit shows
every member upgraded exactly once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.backends.simulated import AuditEvent, SimulatedFleetBackend
from engine.domain.fleet import parse_fleet
from engine.domain.network import MembershipOutcome, network_workflow_id
from engine.domain.run import State, member_workflow_id
from engine.runtime.client import MeshfleetClient
from engine.runtime.worker import all_activities, all_workflows, workflow_runner
from tests.network.upgraded import (
    PATCH,
    UpgradedMemberUpdateWorkflow,
    UpgradedNetworkWorkflow,
)
from tests.polling import eventually
from tests.runs.harness import Cluster, Fleet, create_network, fleet_document, strategy
from workflows.member_update import MemberUpdateWorkflow
from workflows.network import NetworkWorkflow

HANG = {"kind": "hang", "on": "controlPlaneUpgrade"}


def _worker(
    client: Client, task_queue: str, backend: SimulatedFleetBackend, workflows: Sequence[type[Any]]
) -> Worker:
    """A worker of one build; it stops at once (activities in flight are retried elsewhere)."""
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(workflows),
        activities=all_activities(backend, client),
        workflow_runner=workflow_runner(),
    )


def _later_build() -> list[type[Any]]:
    replaced = {
        NetworkWorkflow: UpgradedNetworkWorkflow,
        MemberUpdateWorkflow: UpgradedMemberUpdateWorkflow,
    }
    return [replaced.get(w, w) for w in all_workflows()]


async def _has_marker(client: Client, workflow_id: str) -> bool:
    """Whether the workflow's history holds the patch marker of the later build."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return any(
        PATCH.encode() in e.marker_recorded_event_attributes.SerializeToString()
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
    )


async def test_a_worker_upgraded_mid_run_finishes_the_run_and_network_upgrading_each_member_once(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    clusters = [
        Cluster("a-1", group="a", faults=[HANG]),
        Cluster("a-2", group="a"),
        Cluster("late"),
    ]
    backend = SimulatedFleetBackend(state_dir)
    backend.load(parse_fleet(fleet_document(clusters)))
    network = f"net-{uuid.uuid4().hex[:8]}"
    meshfleet = MeshfleetClient(client, task_queue=task_queue)
    fleet = Fleet(client, task_queue, backend, network, ["a-1", "a-2"])
    plan = strategy([{"name": "all", "groups": [{"name": "a", "maxConcurrency": "1"}]}])

    async with _worker(client, task_queue, backend, all_workflows()):
        await create_network(client, task_queue, network, ["a-1", "a-2"])
        run = await fleet.start_run(plan)

        async def hung() -> bool:
            started = backend.audit(event=AuditEvent.CONTROL_PLANE_UPGRADE_STARTED, cluster="a-1")
            return bool(started)

        await eventually(hung, timeout=60, what="a-1's control-plane upgrade to start (and hang)")
        queued = await meshfleet.join(network, ["late"])
        assert queued.queued
    # The earlier build is gone mid-run. The hang ends; the later build takes over.
    backend.clear_faults("a-1")
    async with _worker(client, task_queue, backend, _later_build()):
        final = await run.result()
        assert final.state is State.COMPLETED, final.error

        async def joined() -> bool:
            described = await meshfleet.describe_network(network)
            return described.holder is None and "late" in [m.name for m in described.members]

        await eventually(joined, timeout=60, what="the queued join to run after the release")
        late = await meshfleet.describe_network(network)
        assert not late.pending

        # The member started on the earlier build kept its branch; the one started on
        # the later build took the patched one.
        assert not await _has_marker(client, member_workflow_id(network, run.name, "a-1"))
        assert await _has_marker(client, member_workflow_id(network, run.name, "a-2"))

    for event in (AuditEvent.CONTROL_PLANE_UPGRADE_COMPLETED, AuditEvent.CILIUM_UPGRADE_COMPLETED):
        upgraded = sorted(e.cluster for e in backend.audit(event=event))
        assert upgraded == ["a-1", "a-2"], (event, upgraded)
    started = sorted(
        e.cluster for e in backend.audit(event=AuditEvent.CONTROL_PLANE_UPGRADE_STARTED)
    )
    assert started == ["a-1", "a-2"]
    assert MembershipOutcome.QUEUED in [m.outcome for m in queued.members]
    await client.get_workflow_handle(network_workflow_id(network)).terminate("test finished")
