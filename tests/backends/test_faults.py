"""Every fault kind fires on its trigger, counts its ``times`` and can be cleared by hand."""

from __future__ import annotations

import pytest

from activities.backends.simulated import AuditEvent, SimulatedFleetBackend
from engine.domain.backend import ClusterUnavailableError, OperationState
from engine.domain.fleet import Fault, FaultKind, FaultTrigger
from tests.backends.conftest import (
    CHECKOUT,
    MEMBERS,
    NAMESPACE,
    SERVICE,
    SHARED,
    FakeClock,
    LoadWorld,
    cluster,
)


def with_faults(name: str, *faults: dict[str, object]) -> list[dict[str, object]]:
    """The three default clusters, ``name`` carrying ``faults`` (as in a fleet file)."""
    return [
        cluster(member, i + 1, **({"faults": list(faults)} if member == name else {}))
        for i, member in enumerate(MEMBERS)
    ]


async def test_fail_fails_the_operation_with_its_message_times_times(
    load_world: LoadWorld, clock: FakeClock
) -> None:
    """A declared fail on controlPlaneUpgrade (times 1) fails the first upgrade only."""
    backend = load_world(
        clusters=with_faults(
            "alpha", {"on": "controlPlaneUpgrade", "kind": "fail", "message": "quota exceeded"}
        )
    )
    first = await backend.start_control_plane_upgrade("alpha", "1.33.0", idempotency_key="one")
    assert first.state is OperationState.FAILED
    assert first.message == "quota exceeded"
    second = await backend.start_control_plane_upgrade("alpha", "1.33.0", idempotency_key="two")
    assert second.state is OperationState.RUNNING
    events = [e.event for e in backend.audit(cluster="alpha")]
    assert AuditEvent.CONTROL_PLANE_UPGRADE_FAILED in events
    assert AuditEvent.FAULT_INJECTED in events


async def test_hang_never_completes_until_cleared(
    backend: SimulatedFleetBackend, clock: FakeClock
) -> None:
    """An injected hang on ciliumUpgrade keeps the upgrade Running; clearing resumes it."""
    record = backend.add_fault("bravo", Fault(kind=FaultKind.HANG, on=FaultTrigger.CILIUM_UPGRADE))
    await backend.start_cilium_upgrade("bravo", "1.18.6", idempotency_key="cilium")
    clock.advance(10_000)
    hung = await backend.get_operation("bravo", "cilium")
    assert hung.state is OperationState.RUNNING
    assert hung.percent == 0
    assert backend.clear_faults(fault_id=record.id) == [record.id]
    clock.advance(200)
    assert (await backend.get_operation("bravo", "cilium")).state is OperationState.SUCCEEDED


async def test_slow_multiplies_the_duration_by_its_factor(
    backend: SimulatedFleetBackend, clock: FakeClock
) -> None:
    """slow x3 turns a 600 s control-plane upgrade into 1800 s."""
    backend.add_fault(
        "alpha", Fault(kind=FaultKind.SLOW, on=FaultTrigger.CONTROL_PLANE_UPGRADE, factor=3)
    )
    await backend.start_control_plane_upgrade("alpha", "1.33.0", idempotency_key="cp")
    clock.advance(1799)
    assert (await backend.get_operation("alpha", "cp")).state is OperationState.RUNNING
    clock.advance(1)
    assert (await backend.get_operation("alpha", "cp")).state is OperationState.SUCCEEDED


async def test_mesh_partition_after_an_upgrade_cuts_only_the_named_peers_for_its_duration(
    load_world: LoadWorld, clock: FakeClock
) -> None:
    """afterUpgrade + peers [bravo] + 60 s: alpha<->bravo drop when the upgrade completes."""
    backend = load_world(
        clusters=with_faults(
            "alpha",
            {"on": "afterUpgrade", "kind": "meshPartition", "peers": ["bravo"], "duration": "60s"},
        )
    )
    await backend.start_control_plane_upgrade("alpha", "1.33.0", idempotency_key="cp")
    clock.advance(599)
    assert (await backend.mesh_health(MEMBERS)).healthy()
    clock.advance(2)
    health = await backend.mesh_health(MEMBERS)
    links = {(link.viewer, link.peer) for link in health.not_ready_links()}
    assert links == {("alpha", "bravo"), ("bravo", "alpha")}
    clock.advance(60)
    assert (await backend.mesh_health(MEMBERS)).not_ready_links() == []


async def test_endpoints_lost_on_join_makes_the_newcomers_endpoints_unready(
    load_world: LoadWorld, clock: FakeClock
) -> None:
    """A join-triggered endpointsLost (until cleared) empties delta's endpoints."""
    clusters = [cluster(name, i + 1) for i, name in enumerate(MEMBERS)]
    clusters.append(
        cluster("delta", 4, faults=[{"on": "join", "kind": "endpointsLost", "service": CHECKOUT}])
    )
    services = [
        {
            "namespace": NAMESPACE,
            "name": SERVICE,
            "clusters": {name: 3 for name in [*MEMBERS, "delta"]},
            "minReadyEndpoints": 1,
        }
    ]
    backend = load_world(clusters=clusters, globalServices=services)
    everyone = [*MEMBERS, "delta"]
    assert (await backend.list_global_services(everyone))[0].per_cluster[
        "delta"
    ].ready_endpoints == 3
    await backend.enable_mesh("delta", network="prod-mesh", idempotency_key="join")
    service = (await backend.list_global_services(everyone))[0]
    assert service.per_cluster["delta"].ready_endpoints == 0
    backend.clear_faults("delta")
    service = (await backend.list_global_services(everyone))[0]
    assert service.per_cluster["delta"].ready_endpoints == 3


async def test_api_unavailable_at_a_sim_time_lasts_its_duration(
    backend: SimulatedFleetBackend, clock: FakeClock
) -> None:
    """atSimTime 100 for 30 s: writes fail with a retryable error in between, then work."""
    backend.add_fault(
        "charlie", Fault(kind=FaultKind.API_UNAVAILABLE, at_sim_time=100, duration="30s")
    )
    clock.advance(110)
    assert not (await backend.describe_member("charlie")).api_available
    with pytest.raises(ClusterUnavailableError):
        await backend.set_service_annotations(
            "charlie", NAMESPACE, SERVICE, {SHARED: "false"}, idempotency_key="drain"
        )
    clock.advance(20)
    member = await backend.describe_member("charlie")
    assert member.api_available
    assert member.healthy


async def test_an_operation_fault_at_a_sim_time_arms_for_the_next_operation(
    backend: SimulatedFleetBackend, clock: FakeClock
) -> None:
    """fail atSimTime 5 fails whatever operation starts next on the cluster, once."""
    backend.add_fault("alpha", Fault(kind=FaultKind.FAIL, at_sim_time=5, message="boom"))
    clock.advance(10)
    failed = await backend.start_cilium_upgrade("alpha", "1.18.6", idempotency_key="c1")
    assert (failed.state, failed.message) == (OperationState.FAILED, "boom")
    again = await backend.start_cilium_upgrade("alpha", "1.18.6", idempotency_key="c2")
    assert again.state is OperationState.RUNNING


@pytest.mark.parametrize("kind", list(FaultKind))
async def test_every_fault_kind_is_audited_when_it_fires(
    backend: SimulatedFleetBackend, clock: FakeClock, kind: FaultKind
) -> None:
    """Each kind, triggered by a control-plane upgrade, leaves a faultInjected entry."""
    backend.add_fault("alpha", Fault(kind=kind, on=FaultTrigger.CONTROL_PLANE_UPGRADE))
    await backend.start_control_plane_upgrade("alpha", "1.33.0", idempotency_key="cp")
    fired = [
        e
        for e in backend.audit(event=AuditEvent.FAULT_INJECTED)
        if e.details.get("action") == "fired"
    ]
    assert [(e.cluster, e.details["kind"]) for e in fired] == [("alpha", kind.value)]
