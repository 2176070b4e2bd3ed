"""Creating, joining, removing and deleting networks on the simulated fleet."""

from __future__ import annotations

from temporalio.worker import Worker

from activities.backends.simulated import AuditEvent, SimulatedFleetBackend
from engine.domain.network import MemberOutcome, MembershipRule, NetworkStatus
from engine.runtime.client import MeshfleetClient
from tests.network.conftest import SETTINGS, cluster, fleet, joined_events, names


async def test_creating_a_network_of_five_and_joining_two_more_converges_to_connected(
    backend: SimulatedFleetBackend, worker: Worker, meshfleet: MeshfleetClient, network_name: str
) -> None:
    """Five members at creation, two more later: all joined, every link ready, ids kept."""
    clusters = names("c", 7)
    backend.load(fleet([cluster(n, i + 1) for i, n in enumerate(clusters)]))

    created = await meshfleet.create_network(network_name, clusters[:5], settings=SETTINGS)
    assert created is not None
    assert [m.outcome for m in created.members] == [MemberOutcome.JOINED] * 5
    assert created.status is NetworkStatus.CONNECTED
    assert created.mesh_ready is True

    joined = await meshfleet.join(network_name, clusters[5:])
    assert [(m.cluster, m.outcome) for m in joined.members] == [
        ("c-6", MemberOutcome.JOINED),
        ("c-7", MemberOutcome.JOINED),
    ]
    assert joined.status is NetworkStatus.CONNECTED

    described = await meshfleet.describe_network(network_name)
    assert described.status is NetworkStatus.CONNECTED
    assert [(m.name, m.cluster_id) for m in described.members] == [
        (n, i + 1) for i, n in enumerate(clusters)
    ]
    health = await backend.mesh_health(clusters)
    assert health.healthy()
    for name in clusters:
        member = await backend.describe_member(name)
        assert member.network == network_name
        assert sorted(member.mesh_peers) == sorted(set(clusters) - {name})
        assert len(joined_events(backend, name)) == 1


async def test_an_overlay_cluster_is_rejected_with_the_rule_named_while_the_others_join(
    backend: SimulatedFleetBackend, worker: Worker, meshfleet: MeshfleetClient, network_name: str
) -> None:
    """One bad cluster in a request does not stop the others."""
    backend.load(
        fleet(
            [
                cluster("a", 1),
                cluster("b", 2),
                cluster("tunnel", 3, networkMode="overlay"),
                cluster("c", 4),
            ]
        )
    )
    await meshfleet.create_network(network_name, ["a"], settings=SETTINGS)

    result = await meshfleet.join(network_name, ["b", "tunnel", "c"])

    outcomes = {m.cluster: m for m in result.members}
    assert outcomes["b"].outcome is MemberOutcome.JOINED
    assert outcomes["c"].outcome is MemberOutcome.JOINED
    assert outcomes["tunnel"].outcome is MemberOutcome.REJECTED
    assert outcomes["tunnel"].rule is MembershipRule.FLAT_NETWORK
    assert "overlay" in (outcomes["tunnel"].message or "")
    described = await meshfleet.describe_network(network_name)
    assert [m.name for m in described.members] == ["a", "b", "c"]
    assert described.status is NetworkStatus.CONNECTED
    assert joined_events(backend, "tunnel") == []
    assert (await backend.describe_member("tunnel")).network is None
