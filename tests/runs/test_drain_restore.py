"""Drain and restore are one safe pair: whatever happens after a drain, the member is restored.

Each test drives a real run on the simulated fleet (real Temporal dev server, real
worker) into one failure path and reads the outcome from the audit log and the
services' annotations, never from timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client

from activities.backends.simulated import SimulatedFleetBackend
from engine.domain.fleet import parse_fleet
from engine.domain.run import DRAIN_WAIT, MemberStep, RunTimings, State, member_workflow_id
from engine.domain.runspec import RunSpec
from engine.domain.services import AnnotationChange
from engine.runtime.runs import UpdateRunHandle, start_update_run
from engine.runtime.worker import build_worker
from strategies import parse_strategy
from tests.polling import eventually
from tests.runs.harness import Cluster, Fleet, create_network, fleet_document, strategy, wait_until

#: The service every test here drains: two ready endpoints in each cluster.
SERVICE = {"namespace": "shop", "name": "checkout", "minReadyEndpoints": 1}
#: Simulated seconds for a change to cross the mesh: 2 s of wall time at the harness scale.
SLOW_PROPAGATION = "4000s"
FAST = RunTimings(
    poll_interval=dt.timedelta(milliseconds=50),
    drain_timeout=dt.timedelta(seconds=20),
    control_plane_timeout=dt.timedelta(seconds=60),
    cilium_timeout=dt.timedelta(seconds=60),
    linger=dt.timedelta(minutes=10),
)


def service_in(*clusters: str, ready: int = 2) -> dict[str, Any]:
    """The checkout service, global in ``clusters`` with ``ready`` endpoints each."""
    return {**SERVICE, "clusters": dict.fromkeys(clusters, ready)}


@contextlib.asynccontextmanager
async def drain_fleet(
    client: Client,
    task_queue: str,
    state_dir: Path,
    clusters: Sequence[Cluster],
    services: Sequence[dict[str, Any]],
    *,
    mesh_propagation: str = "10s",
    backend_type: type[SimulatedFleetBackend] = SimulatedFleetBackend,
) -> AsyncIterator[Fleet]:
    """Like ``harness.running_fleet``, with the mesh's propagation delay chosen by the test."""
    document = fleet_document(clusters, services)
    document["spec"]["durations"] = {"meshPropagation": mesh_propagation}
    backend = backend_type(state_dir)
    backend.load(parse_fleet(document))
    network = f"net-{uuid.uuid4().hex[:8]}"
    members = [c.name for c in clusters]
    async with build_worker(client, task_queue, backend=backend):
        await create_network(client, task_queue, network, members)
        yield Fleet(client, task_queue, backend, network, members)


async def start_run(
    fleet: Fleet, strategy_document: dict[str, Any], timings: RunTimings = FAST
) -> UpdateRunHandle:
    """Start a run to 1.33 with ``timings`` (the harness's own start uses fixed timings)."""
    spec = RunSpec(
        network=fleet.network,
        kubernetes_version="1.33",
        strategy=parse_strategy(strategy_document),
    )
    return await start_update_run(fleet.client, fleet.task_queue, spec, timings=timings)


def annotations(fleet: Fleet, cluster: str, key: str = "shop/checkout") -> dict[str, str]:
    """The annotations of ``cluster``'s copy of a service, as the world holds them now."""
    return dict(fleet.backend.world().clusters[cluster].service_annotations[key])


async def _closed(client: Client, workflow_id: str) -> None:
    """Wait until ``workflow_id`` has closed, however it ended."""
    handle = client.get_workflow_handle(workflow_id)

    async def closed() -> bool:
        return (await handle.describe()).close_time is not None

    await eventually(closed, timeout=60, what=f"{workflow_id} to close")


async def _audited(fleet: Fleet, event: str, cluster: str) -> None:
    """Wait until the audit log holds ``event`` for ``cluster`` (``serviceDrained``, ...)."""
    await eventually(
        lambda: any(e.cluster == cluster for e in fleet.audit(event)),
        timeout=60,
        what=f"{event} for {cluster} in the audit log",
    )


async def test_a_drain_whose_wait_times_out_is_restored_and_the_audit_shows_it(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """The issue's case: the mesh propagates slower than the drain timeout and the budget
    absorbs both failures. Both members are restored: two ``serviceRestored`` entries,
    and neither copy of the service is left ``shared: "false"``."""
    clusters = [Cluster("a-1", group="all"), Cluster("a-2", group="all")]
    timings = FAST.model_copy(update={"drain_timeout": dt.timedelta(seconds=1)})
    async with drain_fleet(
        client,
        task_queue,
        state_dir,
        clusters,
        [service_in("a-1", "a-2")],
        mesh_propagation=SLOW_PROPAGATION,
    ) as fleet:
        run = await start_run(
            fleet,
            strategy(
                [
                    {
                        "name": "all",
                        "maxAllowedFailures": "2",
                        "groups": [{"name": "all", "maxAllowedFailures": "2"}],
                    }
                ]
            ),
            timings,
        )
        status = await run.result()
        assert status.state is State.COMPLETED, status.error
        for name in ("a-1", "a-2"):
            member = status.member(name)
            assert member is not None
            assert member.state is State.FAILED
            assert member.step is MemberStep.DRAIN, member.message
        assert sorted(e.cluster for e in fleet.audit("serviceDrained")) == ["a-1", "a-2"]
        assert sorted(e.cluster for e in fleet.audit("serviceRestored")) == ["a-1", "a-2"]
        for name in ("a-1", "a-2"):
            assert annotations(fleet, name) == {"service.cilium.io/global": "true"}


class _StoppedMesh(SimulatedFleetBackend):
    """The simulated fleet on a clock the test can stop: while it is stopped, simulated
    time stands still, so no change crosses the mesh (a drain is never seen by the peers)."""

    def __init__(self, state_dir: Path) -> None:
        #: The wall-clock time the clock is stopped at (None: it runs).
        self.stopped_at: float | None = None
        super().__init__(state_dir, clock=self.now)

    def now(self) -> float:
        return self.stopped_at if self.stopped_at is not None else time.time()


async def test_a_run_terminated_while_a_member_waits_on_its_drain_restores_the_member(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """Terminating the run cancels its member (parent close policy REQUEST_CANCEL); the
    member, cancelled in the middle of its drain's wait, puts the annotations back.

    The simulated clock is stopped once the network is connected: the drain's change never
    reaches the peers, so its wait is still on when the run is terminated, however slow the
    machine (no wall-clock budget decides it). The clock runs again once the annotations
    are back, and the member closes."""
    clusters = [Cluster("a-1", group="all"), Cluster("a-2", group="all")]
    async with drain_fleet(
        client,
        task_queue,
        state_dir,
        clusters,
        [service_in("a-1", "a-2")],
        backend_type=_StoppedMesh,
    ) as fleet:
        mesh = fleet.backend
        assert isinstance(mesh, _StoppedMesh)
        mesh.stopped_at = time.time()
        # A short heartbeat timeout: the cancelled wait hears of its cancellation within a
        # second or two and ends (a worker shutting down would otherwise wait for it until
        # the drain timeout).
        timings = FAST.model_copy(update={"heartbeat_timeout": dt.timedelta(seconds=2)})
        try:
            run = await start_run(
                fleet, strategy([{"name": "all", "groups": [{"name": "all"}]}]), timings
            )
            status = await run.status()
            member = member_workflow_id(fleet.network, status.run_id, "a-1")
            await _audited(fleet, "serviceDrained", "a-1")
            await _running(client, member, DRAIN_WAIT)
            await client.get_workflow_handle(run.workflow_id).terminate(reason="test")
            await _audited(fleet, "serviceRestored", "a-1")
            assert annotations(fleet, "a-1") == {"service.cilium.io/global": "true"}
        finally:
            mesh.stopped_at = None  # time moves on: the restore's wait can end
        await _closed(client, member)
        assert [e.cluster for e in fleet.audit("serviceRestored")] == ["a-1"]
        assert annotations(fleet, "a-1") == {"service.cilium.io/global": "true"}


async def _running(client: Client, workflow_id: str, activity: str) -> None:
    """Wait until ``workflow_id`` has ``activity`` started and still running."""
    handle = client.get_workflow_handle(workflow_id)

    async def started() -> bool:
        pending = (await handle.describe()).raw_description.pending_activities
        return any(
            p.activity_type.name == activity
            and p.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
            for p in pending
        )

    await eventually(started, timeout=60, what=f"{workflow_id} to be running {activity}")


async def test_a_restore_that_cannot_complete_fails_the_member_naming_what_is_left_drained(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """The member's API goes away as its control-plane upgrade fails, and stays away past
    the restore timeout: the member fails saying it is left drained, naming the service,
    and the annotation really is still ``shared: "false"`` (nothing pretends otherwise)."""
    faults = [
        {"kind": "fail", "on": "controlPlaneUpgrade", "message": "upgrade broke"},
        {"kind": "apiUnavailable", "on": "controlPlaneUpgrade"},
    ]
    clusters = [Cluster("a-1", group="all", faults=faults), Cluster("a-2", group="all")]
    timings = FAST.model_copy(
        update={
            "control_plane_timeout": dt.timedelta(seconds=2),
            "restore_timeout": dt.timedelta(seconds=3),
        }
    )
    async with drain_fleet(
        client, task_queue, state_dir, clusters, [service_in("a-1", "a-2")]
    ) as fleet:
        run = await start_run(
            fleet, strategy([{"name": "all", "groups": [{"name": "all"}]}]), timings
        )
        status = await run.result()
        member = status.member("a-1")
        assert member is not None
        assert member.state is State.FAILED
        assert member.step is MemberStep.RESTORE
        assert member.message is not None
        assert member.message.startswith("LEFT DRAINED: a-1 ")
        assert "shop/checkout" in member.message
        assert annotations(fleet, "a-1")["service.cilium.io/shared"] == "false"
        assert not fleet.audit("serviceRestored")


async def test_a_member_whose_endpoints_never_come_back_fails_at_verify_and_is_restored(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """Its copy lost its endpoints after the upgrade: verify fails, the annotations are put
    back, and the restore does not wait for peers to route to a copy with nothing ready
    (which used to time out and hide verify's reason behind the restore's)."""
    lost = {"kind": "endpointsLost", "on": "afterUpgrade", "service": "shop/checkout"}
    clusters = [Cluster("a-1", group="all", faults=[lost]), Cluster("a-2", group="all")]
    async with drain_fleet(
        client, task_queue, state_dir, clusters, [service_in("a-1", "a-2")]
    ) as fleet:
        run = await start_run(
            fleet,
            strategy([{"name": "all", "groups": [{"name": "all"}]}], meshReadyTimeout="2s"),
        )
        status = await wait_until(
            run, lambda s: (m := s.member("a-1")) is not None and m.state is State.FAILED
        )
        member = status.member("a-1")
        assert member is not None
        assert member.step is MemberStep.VERIFY, member.message
        assert member.message is not None
        assert member.message.startswith("Verify failed: ")
        assert "shop/checkout: 0/2 endpoints ready" in member.message
        assert member.message.endswith("; restored")
        assert [e.cluster for e in fleet.audit("serviceRestored")] == ["a-1"]
        assert annotations(fleet, "a-1") == {"service.cilium.io/global": "true"}
        await client.get_workflow_handle(run.workflow_id).terminate(reason="test over")


class _HeldDrain(SimulatedFleetBackend):
    """The simulated fleet, except that a drain's annotation waits until the test lets it go."""

    annotating = asyncio.Event()
    release = asyncio.Event()

    async def set_service_annotations(
        self,
        cluster: str,
        namespace: str,
        name: str,
        changes: Mapping[str, str | None],
        *,
        idempotency_key: str,
    ) -> AnnotationChange:
        if changes.get("service.cilium.io/shared") == "false":
            self.annotating.set()
            await self.release.wait()
        return await super().set_service_annotations(
            cluster, namespace, name, changes, idempotency_key=idempotency_key
        )


async def test_a_member_cancelled_while_annotating_lets_the_drain_finish_and_restores_it(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """The run ends while the drain is still annotating: the member's cancellation does
    not abandon the annotating activity; it waits for its record, then restores it."""
    _HeldDrain.annotating = asyncio.Event()
    _HeldDrain.release = asyncio.Event()
    clusters = [Cluster("a-1", group="all"), Cluster("a-2", group="all")]
    async with drain_fleet(
        client,
        task_queue,
        state_dir,
        clusters,
        [service_in("a-1", "a-2")],
        backend_type=_HeldDrain,
    ) as fleet:
        run = await start_run(fleet, strategy([{"name": "all", "groups": [{"name": "all"}]}]))
        status = await run.status()
        member = member_workflow_id(fleet.network, status.run_id, "a-1")
        await asyncio.wait_for(_HeldDrain.annotating.wait(), timeout=60)
        await client.get_workflow_handle(run.workflow_id).terminate(reason="test")
        await _cancel_requested(client, member)
        _HeldDrain.release.set()
        await _closed(client, member)
        assert [e.cluster for e in fleet.audit("serviceDrained")] == ["a-1"]
        assert [e.cluster for e in fleet.audit("serviceRestored")] == ["a-1"]
        assert annotations(fleet, "a-1") == {"service.cilium.io/global": "true"}


async def _cancel_requested(client: Client, workflow_id: str) -> None:
    """Wait until ``workflow_id``'s history holds the cancel request its parent's end sent."""
    handle = client.get_workflow_handle(workflow_id)

    async def requested() -> bool:
        async for event in handle.fetch_history_events():
            if event.HasField("workflow_execution_cancel_requested_event_attributes"):
                return True
        return False

    await eventually(requested, timeout=60, what=f"{workflow_id} to be asked to cancel")
