"""Mesh convergence, control-plane and Cilium upgrades, and simulated time."""

from __future__ import annotations

import pytest

from activities.backends.simulated import AuditEvent, SimulatedFleetBackend
from activities.backends.simulated.model import Condition, ConditionKind, World
from engine.domain.backend import ClusterUnavailableError, OperationState
from engine.domain.fleet import parse_fleet
from tests.backends.conftest import (
    CHECKOUT,
    MEMBERS,
    NAMESPACE,
    SERVICE,
    SHARED,
    FakeClock,
    LoadWorld,
    cluster,
    fleet_document,
)


async def test_an_agent_restart_during_a_cilium_upgrade_is_a_short_not_ready_period(
    backend: SimulatedFleetBackend, clock: FakeClock
) -> None:
    """The restart (30 s in, 20 s long) drops alpha's links both ways and its endpoints;
    mesh health reports it, then everything recovers and the version changes at the end."""
    before = await backend.mesh_health(MEMBERS)
    assert before.healthy()
    await backend.start_cilium_upgrade("alpha", "1.18.6", idempotency_key="cilium-alpha")

    clock.advance(29)
    rolling = await backend.mesh_health(MEMBERS)
    assert [(link.viewer, link.peer) for link in rolling.not_ready_links()] == [
        ("alpha", "*"),
        ("alpha", "*"),
    ], "only the rollout itself is in progress: every link is still ready"

    clock.advance(2)
    during = await backend.mesh_health(MEMBERS)
    links = {(link.viewer, link.peer): link.reason for link in during.not_ready_links()}
    assert links[("alpha", "bravo")] == "Waiting for initial connection to be established"
    assert ("bravo", "alpha") in links
    assert ("bravo", "charlie") not in links
    assert any("agent not rolled out" in link.reason for link in during.not_ready_links())
    services = await backend.list_global_services(MEMBERS)
    assert services[0].per_cluster["alpha"].ready_endpoints == 0
    progress = await backend.get_operation("alpha", "cilium-alpha")
    assert progress.phase == "rolling out agent DaemonSet"

    clock.advance(20)
    after = await backend.mesh_health(MEMBERS)
    assert after.not_ready_links() == []
    assert not after.healthy(previous=before), "num-failures grew during the restart"
    assert after.healthy(previous=after)

    clock.advance(100)
    done = await backend.get_operation("alpha", "cilium-alpha")
    assert done.state is OperationState.SUCCEEDED
    assert done.percent == 100
    assert all(component.rolled_out for component in done.components)
    assert (await backend.describe_member("alpha")).cilium_version == "1.18.6"
    assert [e.event for e in backend.audit(cluster="alpha")][-2:] == [
        AuditEvent.CILIUM_UPGRADE_STARTED,
        AuditEvent.CILIUM_UPGRADE_COMPLETED,
    ]


async def test_a_control_plane_upgrade_takes_its_time_and_blips_the_api(
    backend: SimulatedFleetBackend, clock: FakeClock
) -> None:
    """600 s: the version changes only at completion; the API is down 300-330 s in."""
    started = await backend.start_control_plane_upgrade(
        "alpha", "1.33.2", idempotency_key="cp-alpha"
    )
    assert started.state is OperationState.RUNNING
    clock.advance(310)
    member = await backend.describe_member("alpha")
    assert not member.api_available
    assert member.kubernetes_version == "1.32.6"
    with pytest.raises(ClusterUnavailableError):
        await backend.set_service_annotations(
            "alpha", NAMESPACE, SERVICE, {SHARED: "false"}, idempotency_key="drain"
        )
    assert (await backend.mesh_health(["alpha"])).members[0].api_available is False
    progress = await backend.get_operation("alpha", "cp-alpha")
    assert progress.percent == 51
    clock.advance(290)
    member = await backend.describe_member("alpha")
    assert member.api_available
    assert member.kubernetes_version == "1.33.2"


async def test_a_control_plane_never_skips_a_minor_or_goes_down(
    backend: SimulatedFleetBackend,
) -> None:
    """Like AKS, the simulated cloud refuses 1.32 -> 1.34 and downgrades: the operation fails."""
    skip = await backend.start_control_plane_upgrade("alpha", "1.34.0", idempotency_key="skip")
    assert skip.state is OperationState.FAILED
    assert "one minor at a time" in (skip.message or "")
    down = await backend.start_control_plane_upgrade("bravo", "1.31.0", idempotency_key="down")
    assert down.state is OperationState.FAILED


async def test_a_newcomer_is_seen_by_its_peers_only_after_it_sees_them(
    load_world: LoadWorld, clock: FakeClock
) -> None:
    """Enabling takes 10 s, the newcomer's links converge 10 s later, its peers' 10 s after."""
    backend = load_world(
        clusters=[cluster(name, i + 1) for i, name in enumerate([*MEMBERS, "delta"])]
    )
    check = await backend.check_join_prerequisites("delta", "prod-mesh", MEMBERS)
    assert check.ok, check.failed
    await backend.enable_mesh("delta", network="prod-mesh", idempotency_key="enable-delta")
    await backend.connect_peers("delta", MEMBERS, idempotency_key="delta-to-all")
    for member in MEMBERS:
        await backend.connect_peers(member, ["delta"], idempotency_key=f"{member}-to-delta")
    everyone = [*MEMBERS, "delta"]

    def ready(health_links: list[tuple[str, str]], viewer: str, peer: str) -> bool:
        return (viewer, peer) not in health_links and (viewer, "*") not in health_links

    timeline: dict[float, list[tuple[str, str]]] = {}
    for elapsed in (5, 15, 25, 35):
        clock.advance(elapsed - (max(timeline) if timeline else 0))
        health = await backend.mesh_health(everyone)
        timeline[elapsed] = [(link.viewer, link.peer) for link in health.not_ready_links()]
    assert not ready(timeline[5], "delta", "alpha")
    assert not ready(timeline[15], "delta", "alpha")
    assert ready(timeline[25], "delta", "alpha")
    assert not ready(timeline[25], "alpha", "delta")
    assert timeline[35] == []
    newcomer = await backend.describe_member("delta")
    assert newcomer.network == "prod-mesh"
    assert newcomer.mesh_peers == sorted(MEMBERS)
    joined = backend.audit(event=AuditEvent.MEMBER_JOINED, cluster="delta")
    assert [e.sim_time for e in joined] == [10.0]


async def test_removing_a_member_takes_its_backends_out_of_its_peers_views(
    backend: SimulatedFleetBackend, clock: FakeClock
) -> None:
    """Disconnecting a peer drops its backends at once; disabling the mesh clears the record."""
    for member in ("bravo", "charlie"):
        await backend.disconnect_peers(member, ["alpha"], idempotency_key=f"{member}-drop")
    await backend.disable_mesh("alpha", idempotency_key="disable-alpha")
    services = await backend.list_global_services(MEMBERS)
    assert services[0].routing["bravo"].from_cluster("alpha") is None
    removed = await backend.describe_member("alpha")
    assert (removed.network, removed.mesh_enabled, removed.mesh_peers) == (None, False, [])
    assert backend.audit(event=AuditEvent.MEMBER_REMOVED)[0].cluster == "alpha"
    assert len(backend.audit(event=AuditEvent.MESH_DISCONNECTED)) == 2


async def test_time_scale_zero_completes_every_operation_at_once(
    load_world: LoadWorld,
) -> None:
    """With timeScale 0 the next read finds a 600 s upgrade done, without any clock moving."""
    backend = load_world(timeScale=0)
    await backend.start_control_plane_upgrade("alpha", "1.33.0", idempotency_key="cp")
    progress = await backend.get_operation("alpha", "cp")
    assert progress.state is OperationState.SUCCEEDED
    assert backend.sim_time() == 600.0
    services = await backend.list_global_services(MEMBERS)
    assert services[0].key == CHECKOUT


async def test_a_focused_mesh_read_sees_only_the_links_of_its_member(
    backend: SimulatedFleetBackend, clock: FakeClock
) -> None:
    """A link between two other members is outside a focus; a full read reports it."""
    from engine.domain.fleet import Fault, FaultKind

    alpha, bravo, charlie = MEMBERS
    backend.add_fault(bravo, Fault(kind=FaultKind.MESH_PARTITION, at_sim_time=0, peers=[charlie]))
    clock.advance(30)
    full = await backend.mesh_health(MEMBERS)
    assert {(link.viewer, link.peer) for link in full.not_ready_links()} >= {(bravo, charlie)}

    focused = await backend.mesh_health(MEMBERS, focus=alpha)
    assert focused.focus == alpha
    assert focused.not_ready_links() == []
    view = focused.view(bravo)
    assert view is not None
    assert [r.name for r in view.remote_clusters] == [alpha]

    on_bravo = await backend.mesh_health(MEMBERS, focus=bravo)
    assert (bravo, charlie) in {(link.viewer, link.peer) for link in on_bravo.not_ready_links()}


def _condition(ident: int, start: float, end: float | None) -> Condition:
    return Condition(
        id=ident, kind=ConditionKind.AGENT_RESTART, cluster="alpha", start=start, end=end
    )


def test_an_instant_skips_only_the_conditions_that_had_all_ended_before_it() -> None:
    """``ended_before`` lets an instant skip the leading conditions that are over; it stops
    at the first still open, and an instant earlier than the last one asked skips none."""
    world = World(
        fleet=parse_fleet(fleet_document()),
        loaded_wall=0.0,
        conditions=[_condition(1, 0, 5), _condition(2, 1, 10), _condition(3, 2, None)],
    )
    world.conditions.append(_condition(4, 3, 4))

    assert world.ended_before(7) == 1, "the second condition lasts until 10"
    assert world.ended_before(12) == 2, "the third never ends: the fourth stays looked at"
    assert world.ended_before(6) == 0, "an earlier instant looks at every condition"
    world.conditions[2].end = 13  # a cleared fault: its end only ever moves earlier
    assert world.ended_before(20) == 4


async def test_a_member_upgraded_twice_restarts_again_after_its_first_restart_ended(
    backend: SimulatedFleetBackend, clock: FakeClock
) -> None:
    """The first rollout's restart is over (and skipped from then on); the second one's
    restart still drops the member's links."""
    await backend.start_cilium_upgrade("alpha", "1.18.6", idempotency_key="first")
    clock.advance(300)
    assert (await backend.get_operation("alpha", "first")).done
    assert (await backend.mesh_health(MEMBERS)).healthy()

    await backend.start_cilium_upgrade("alpha", "1.18.7", idempotency_key="second")
    clock.advance(31)
    during = await backend.mesh_health(MEMBERS)
    assert ("alpha", "bravo") in {(link.viewer, link.peer) for link in during.not_ready_links()}
