"""Global services: drains, restores, stale backends and what makes a service global."""

from __future__ import annotations

from activities.backends.simulated import AuditEvent, SimulatedFleetBackend
from engine.domain.fleet import Fault, FaultKind
from engine.domain.services import ANNOTATION_NAMESPACE_GLOBAL, GlobalService
from tests.backends.conftest import CHECKOUT, MEMBERS, NAMESPACE, SERVICE, SHARED, FakeClock


async def checkout(backend: SimulatedFleetBackend) -> GlobalService:
    (service,) = [s for s in await backend.list_global_services(MEMBERS) if s.key == CHECKOUT]
    return service


def routes_to(service: GlobalService, viewer: str, source: str) -> int:
    entry = service.routing[viewer].from_cluster(source)
    return entry.routable if entry is not None else 0


async def test_every_member_starts_routing_to_every_members_backends(
    backend: SimulatedFleetBackend,
) -> None:
    """A declared network starts converged: each view holds all nine backends, all ready."""
    service = await checkout(backend)
    for viewer in MEMBERS:
        assert service.routing[viewer].routable == 9
        assert service.routing[viewer].ready_routable == 9
    assert service.per_cluster["alpha"].is_global
    assert service.min_ready_endpoints == 2


async def test_a_drain_reaches_peers_only_after_the_propagation_delay(
    backend: SimulatedFleetBackend, clock: FakeClock
) -> None:
    """shared=false removes alpha's backends from its peers' views after 10 s, and
    alpha keeps routing to the remote backends all along."""
    change = await backend.set_service_annotations(
        "alpha", NAMESPACE, SERVICE, {SHARED: "false"}, idempotency_key="drain-alpha"
    )
    assert change.previous == {SHARED: None}

    clock.advance(9)
    service = await checkout(backend)
    assert routes_to(service, "bravo", "alpha") == 3, "peers still route to alpha mid-propagation"

    clock.advance(1)
    service = await checkout(backend)
    for peer in ("bravo", "charlie"):
        assert routes_to(service, peer, "alpha") == 0
        assert service.routing[peer].routable == 6
    assert routes_to(service, "alpha", "bravo") == 3
    assert routes_to(service, "alpha", "charlie") == 3
    assert not service.per_cluster["alpha"].shared


async def test_restoring_the_annotations_brings_the_backends_back(
    backend: SimulatedFleetBackend, clock: FakeClock
) -> None:
    """Setting the remembered previous annotations re-exports alpha's backends after 10 s."""
    change = await backend.set_service_annotations(
        "alpha", NAMESPACE, SERVICE, {SHARED: "false"}, idempotency_key="drain"
    )
    clock.advance(15)
    restored = await backend.set_service_annotations(
        "alpha", NAMESPACE, SERVICE, change.previous, idempotency_key="restore"
    )
    assert restored.current == {SHARED: None}
    clock.advance(5)
    assert routes_to(await checkout(backend), "bravo", "alpha") == 0
    clock.advance(5)
    service = await checkout(backend)
    assert routes_to(service, "bravo", "alpha") == 3
    assert service.per_cluster["alpha"].annotations == {"service.cilium.io/global": "true"}
    events = [e.event for e in backend.audit(cluster="alpha")]
    assert AuditEvent.SERVICE_DRAINED in events
    assert AuditEvent.SERVICE_RESTORED in events


async def test_an_unreachable_peers_stale_backends_stay_routable(
    backend: SimulatedFleetBackend, clock: FakeClock
) -> None:
    """Without a cache TTL, peers keep routing to a partitioned member's last-known
    backends, even once those backends are gone; only readiness tells the truth."""
    backend.add_fault("alpha", Fault(kind=FaultKind.MESH_PARTITION, at_sim_time=0))
    backend.add_fault("alpha", Fault(kind=FaultKind.ENDPOINTS_LOST, at_sim_time=5))
    clock.advance(60)
    service = await checkout(backend)
    stale = service.routing["bravo"].from_cluster("alpha")
    assert stale is not None
    assert stale.stale
    assert stale.routable == 3
    assert stale.ready == 0
    assert service.routing["bravo"].ready_routable == 6
    health = await backend.mesh_health(MEMBERS)
    assert not health.healthy()
    assert {(link.viewer, link.peer) for link in health.not_ready_links()} == {
        ("alpha", "bravo"),
        ("alpha", "charlie"),
        ("bravo", "alpha"),
        ("charlie", "alpha"),
    }


async def test_a_service_is_global_only_with_the_namespace_annotation_too(
    backend: SimulatedFleetBackend, clock: FakeClock
) -> None:
    """Removing clustermesh.cilium.io/global from bravo's namespace stops bravo merging
    remote backends and exporting its own."""
    await backend.set_namespace_annotations(
        "bravo", NAMESPACE, {ANNOTATION_NAMESPACE_GLOBAL: None}, idempotency_key="ns"
    )
    clock.advance(10)
    service = await checkout(backend)
    assert not service.per_cluster["bravo"].is_global
    assert [b.cluster for b in service.routing["bravo"].backends] == ["bravo"]
    assert routes_to(service, "alpha", "bravo") == 0
    assert [e.event for e in backend.audit(cluster="bravo")][-1] is AuditEvent.ANNOTATIONS_CHANGED
