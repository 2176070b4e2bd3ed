"""The continuity monitor: violations are recorded when they happen, from every viewpoint."""

from __future__ import annotations

from activities.backends.simulated import AuditEvent, SimulatedFleetBackend
from engine.domain.fleet import Fault, FaultKind
from tests.backends.conftest import (
    CHECKOUT,
    MEMBERS,
    NAMESPACE,
    SERVICE,
    SHARED,
    FakeClock,
    LoadWorld,
)

#: checkout served only by alpha and bravo; charlie only consumes it.
TWO_SERVERS = [
    {
        "namespace": NAMESPACE,
        "name": SERVICE,
        "clusters": {"alpha": 3, "bravo": 3, "charlie": 0},
        "minReadyEndpoints": 2,
    }
]


async def test_taking_down_the_only_two_servers_records_violations_from_every_viewpoint(
    load_world: LoadWorld, clock: FakeClock
) -> None:
    """Both servers lose their endpoints 50-70 s in; nobody reads until 100 s, yet each
    viewpoint's violation is recorded at 50 s with its counts. The servers recover at
    70 s; charlie only when the recovered backends reach it, 10 s later."""
    backend = load_world(globalServices=TWO_SERVERS)
    for member in ("alpha", "bravo"):
        backend.add_fault(
            member,
            Fault(kind=FaultKind.ENDPOINTS_LOST, at_sim_time=50, duration="20s", service=CHECKOUT),
        )
    clock.advance(100)
    violations = backend.violations()
    assert sorted(v.viewpoint for v in violations) == sorted(MEMBERS)
    ended = {v.viewpoint: v.ended for v in violations}
    assert ended == {"alpha": 70.0, "bravo": 70.0, "charlie": 80.0}
    for violation in violations:
        assert violation.service == CHECKOUT
        assert violation.started == 50.0
        assert violation.ready_routable == 0
        assert violation.min_ready_endpoints == 2
    from_charlie = [
        e for e in backend.audit(event=AuditEvent.VIOLATION) if e.details["viewpoint"] == "charlie"
    ]
    assert len(from_charlie) == 1
    entry = from_charlie[0].to_json_dict()
    assert entry["simTime"] == 50.0
    assert entry["details"] == {
        "service": CHECKOUT,
        "viewpoint": "charlie",
        "readyRoutable": 0,
        "routable": 6,
        "minReadyEndpoints": 2,
    }
    assert set(entry) == {"at", "simTime", "cluster", "event", "details"}
    assert str(entry["at"]).endswith("Z")


async def test_losing_one_of_two_servers_is_a_violation_only_where_too_few_remain(
    load_world: LoadWorld, clock: FakeClock
) -> None:
    """With alpha down, bravo still offers 3 >= 2: no viewpoint falls short."""
    backend = load_world(globalServices=TWO_SERVERS)
    backend.add_fault("alpha", Fault(kind=FaultKind.ENDPOINTS_LOST, at_sim_time=0))
    clock.advance(30)
    assert backend.violations() == []


async def test_a_drained_member_upgrades_without_a_violation(
    backend: SimulatedFleetBackend, clock: FakeClock
) -> None:
    """Drain, wait, upgrade Cilium (restart included), restore: 6 endpoints stay elsewhere."""
    change = await backend.set_service_annotations(
        "alpha", NAMESPACE, SERVICE, {SHARED: "false"}, idempotency_key="drain"
    )
    clock.advance(10)
    await backend.start_cilium_upgrade("alpha", "1.18.6", idempotency_key="cilium")
    clock.advance(130)
    await backend.set_service_annotations(
        "alpha", NAMESPACE, SERVICE, change.previous, idempotency_key="restore"
    )
    clock.advance(10)
    assert backend.violations() == []


async def test_an_undrained_restart_leaves_peers_routing_to_unready_backends(
    load_world: LoadWorld, clock: FakeClock
) -> None:
    """Without a drain, peers keep alpha's unready backends in their tables during the
    restart: routable but not ready. With a minimum of 7 out of 9 that is a violation."""
    services = [
        {
            "namespace": NAMESPACE,
            "name": SERVICE,
            "clusters": {name: 3 for name in MEMBERS},
            "minReadyEndpoints": 7,
        }
    ]
    backend = load_world(globalServices=services)
    await backend.start_cilium_upgrade("alpha", "1.18.6", idempotency_key="cilium")
    clock.advance(40)
    service = (await backend.list_global_services(MEMBERS))[0]
    view = service.routing["bravo"]
    assert (view.routable, view.ready_routable) == (9, 6)
    assert {v.viewpoint for v in backend.violations()} == set(MEMBERS)
    assert all(v.started == 30.0 for v in backend.violations())
