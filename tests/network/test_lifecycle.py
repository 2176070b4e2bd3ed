"""Creating, joining, removing and deleting networks on the simulated fleet."""

from __future__ import annotations

import datetime as dt

from temporalio.worker import Worker

from activities.backends.simulated import AuditEvent, SimulatedFleetBackend
from engine.domain.membership import MembershipRule
from engine.domain.network import MembershipOutcome, NetworkStatus, network_workflow_id
from engine.runtime.client import MeshfleetClient
from tests.network.conftest import SETTINGS, cluster, fleet, joined_events, names
from tests.polling import eventually

#: The summary the network gives the activity that re-reads a Degraded mesh.
REREAD = b"re-read the degraded mesh"


async def test_creating_a_network_of_five_and_joining_two_more_converges_to_connected(
    backend: SimulatedFleetBackend, worker: Worker, meshfleet: MeshfleetClient, network_name: str
) -> None:
    """Five members at creation, two more later: all joined, every link ready, ids kept."""
    clusters = names("c", 7)
    backend.load(fleet([cluster(n, i + 1) for i, n in enumerate(clusters)]))

    created = await meshfleet.create_network(network_name, clusters[:5], settings=SETTINGS)
    assert created is not None
    assert [m.outcome for m in created.members] == [MembershipOutcome.JOINED] * 5
    assert created.status is NetworkStatus.CONNECTED
    assert created.mesh_ready is True

    joined = await meshfleet.join(network_name, clusters[5:])
    assert [(m.cluster, m.outcome) for m in joined.members] == [
        ("c-6", MembershipOutcome.JOINED),
        ("c-7", MembershipOutcome.JOINED),
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
    assert outcomes["b"].outcome is MembershipOutcome.JOINED
    assert outcomes["c"].outcome is MembershipOutcome.JOINED
    assert outcomes["tunnel"].outcome is MembershipOutcome.REJECTED
    assert outcomes["tunnel"].rule is MembershipRule.FLAT_NETWORK
    assert "overlay" in (outcomes["tunnel"].message or "")
    described = await meshfleet.describe_network(network_name)
    assert [m.name for m in described.members] == ["a", "b", "c"]
    assert described.status is NetworkStatus.CONNECTED
    assert joined_events(backend, "tunnel") == []
    assert (await backend.describe_member("tunnel")).network is None


async def test_a_cluster_already_in_another_network_is_rejected(
    backend: SimulatedFleetBackend, worker: Worker, meshfleet: MeshfleetClient, network_name: str
) -> None:
    """Checked against reality: both another meshfleet network and a mesh found in the fleet."""
    backend.load(
        fleet(
            [cluster("a", 1), cluster("b", 2), cluster("x", 3), cluster("y", 4), cluster("z", 5)],
            networks=[{"name": "legacy", "members": ["y", "z"]}],
        )
    )
    other = f"{network_name}-other"
    await meshfleet.create_network(other, ["a", "x"], settings=SETTINGS)

    result = await meshfleet.create_network(network_name, ["b", "x", "y"], settings=SETTINGS)

    assert result is not None
    outcomes = {m.cluster: m for m in result.members}
    assert outcomes["b"].outcome is MembershipOutcome.JOINED
    for name, owner in (("x", other), ("y", "legacy")):
        assert outcomes[name].outcome is MembershipOutcome.REJECTED
        assert outcomes[name].rule is MembershipRule.SINGLE_NETWORK
        assert owner in (outcomes[name].message or "")
    assert (await backend.describe_member("x")).network == other
    description = await meshfleet.describe_network(network_name)
    assert [m.name for m in description.members] == ["b"]
    # The network's log says each rule's code once, not "singleNetwork: singleNetwork: ...".
    rejected = [e.message for e in description.log if e.event == "rejected"]
    assert rejected
    assert all(m.startswith("singleNetwork: ") for m in rejected), rejected
    assert not any("singleNetwork: singleNetwork" in m for m in rejected), rejected


async def test_a_cluster_without_a_usable_id_gets_the_lowest_free_one(
    backend: SimulatedFleetBackend, worker: Worker, meshfleet: MeshfleetClient, network_name: str
) -> None:
    """A valid id is kept; a missing or clashing one is replaced by the lowest free id."""
    backend.load(fleet([cluster("a", 3), cluster("b", None), cluster("c", 1)]))
    # b has no id and gets 1; c's own 1 is then taken, so it gets 2.
    result = await meshfleet.create_network(network_name, ["a", "b", "c"], settings=SETTINGS)

    assert result is not None
    assert [(m.cluster, m.cluster_id) for m in result.members] == [("a", 3), ("b", 1), ("c", 2)]
    described = await meshfleet.describe_network(network_name)
    assert [m.cluster_id_assigned for m in described.members] == [False, True, True]


async def test_overlapping_pod_cidrs_and_old_kubernetes_are_rejected_by_name(
    backend: SimulatedFleetBackend, worker: Worker, meshfleet: MeshfleetClient, network_name: str
) -> None:
    """Pod CIDRs are checked against members and earlier newcomers of the same request."""
    backend.load(
        fleet(
            [
                cluster("a", 1),
                cluster("twin", 7, podCIDRs=["10.1.128.0/17"]),
                cluster("old", 8, kubernetesVersion="1.31.9", ciliumVersion="1.16.16"),
                cluster("nocilium", 9, acns=False),
                cluster("diy", 10, selfManagedMesh=True),
            ]
        )
    )
    result = await meshfleet.create_network(
        network_name, ["a", "twin", "old", "nocilium", "diy", "ghost"], settings=SETTINGS
    )

    assert result is not None
    rules = {m.cluster: m.rule for m in result.members}
    assert rules == {
        "a": None,
        "twin": MembershipRule.POD_CIDRS,
        "old": MembershipRule.KUBERNETES_VERSION,
        "nocilium": MembershipRule.CILIUM_DATAPLANE,
        "diy": MembershipRule.NO_SELF_MANAGED_MESH,
        "ghost": MembershipRule.CLUSTER_KNOWN,
    }


async def test_removing_a_member_drains_its_services_first_and_breaks_no_continuity(
    backend: SimulatedFleetBackend, worker: Worker, meshfleet: MeshfleetClient, network_name: str
) -> None:
    """Drain, then disconnect both ways, then disable; peers forget it; nothing dips."""
    clusters = ["a", "b", "c"]
    backend.load(
        fleet(
            [cluster(n, i + 1) for i, n in enumerate(clusters)],
            services=[
                {
                    "namespace": "shop",
                    "name": "checkout",
                    # Every viewpoint needs 3: a and b have 4 without c; c alone has 3.
                    "clusters": {"a": 2, "b": 2, "c": 3},
                    "minReadyEndpoints": 3,
                }
            ],
        )
    )
    await meshfleet.create_network(network_name, clusters, settings=SETTINGS)
    before = backend.audit()[-1].seq

    result = await meshfleet.remove(network_name, ["c"])

    assert [(m.cluster, m.outcome) for m in result.members] == [("c", MembershipOutcome.REMOVED)]
    assert result.status is NetworkStatus.CONNECTED
    events = [(e.event, e.cluster) for e in backend.audit(after=before)]
    drained = events.index((AuditEvent.SERVICE_DRAINED, "c"))
    first_disconnect = min(
        i for i, (event, _) in enumerate(events) if event is AuditEvent.MESH_DISCONNECTED
    )
    assert drained < first_disconnect
    assert events.index((AuditEvent.MEMBER_REMOVED, "c")) > first_disconnect
    assert (AuditEvent.SERVICE_RESTORED, "c") in events
    # (Before the network existed a and b saw only their own 2 endpoints.)
    assert backend.audit(after=before, event=AuditEvent.VIOLATION) == []
    assert [v for v in backend.violations() if v.ended is None] == []
    for peer in ("a", "b"):
        assert "c" not in (await backend.describe_member(peer)).mesh_peers
    gone = await backend.describe_member("c")
    assert gone.network is None
    assert not gone.mesh_enabled
    assert [m.name for m in (await meshfleet.describe_network(network_name)).members] == ["a", "b"]


async def test_a_mesh_that_does_not_converge_leaves_the_network_degraded_with_the_links(
    backend: SimulatedFleetBackend, worker: Worker, meshfleet: MeshfleetClient, network_name: str
) -> None:
    """A newcomer partitioned from its peers: joined, but Degraded with the links named."""
    from engine.domain.fleet import Fault, FaultKind, FaultTrigger

    backend.load(fleet([cluster("a", 1), cluster("b", 2), cluster("cut", 3)]))
    await meshfleet.create_network(
        network_name,
        ["a", "b"],
        settings=SETTINGS.model_copy(update={"mesh_ready_timeout": SETTINGS.heartbeat_timeout}),
    )
    backend.add_fault("cut", Fault(kind=FaultKind.MESH_PARTITION, on=FaultTrigger.JOIN))

    result = await meshfleet.join(network_name, ["cut"])

    assert result.members[0].outcome is MembershipOutcome.JOINED
    assert "did not report ready" in (result.members[0].message or "")
    assert result.status is NetworkStatus.DEGRADED
    assert result.mesh_ready is False
    links = {(link.viewer, link.peer) for link in result.not_ready_links}
    assert {("cut", "a"), ("a", "cut"), ("cut", "b"), ("b", "cut")} <= links
    described = await meshfleet.describe_network(network_name)
    assert described.status is NetworkStatus.DEGRADED
    assert described.not_ready_links


async def test_a_degraded_network_becomes_connected_again_once_its_mesh_heals(
    backend: SimulatedFleetBackend, worker: Worker, meshfleet: MeshfleetClient, network_name: str
) -> None:
    """Idle and Degraded, the network reads its mesh again every interval; when the
    partition is cleared it is Connected, with no links left and the healing logged."""
    from engine.domain.fleet import Fault, FaultKind, FaultTrigger

    backend.load(fleet([cluster("a", 1), cluster("b", 2), cluster("cut", 3)]))
    settings = SETTINGS.model_copy(
        update={
            "mesh_ready_timeout": SETTINGS.heartbeat_timeout,
            "degraded_recheck_interval": dt.timedelta(seconds=1),
        }
    )
    await meshfleet.create_network(network_name, ["a", "b"], settings=settings)
    backend.add_fault("cut", Fault(kind=FaultKind.MESH_PARTITION, on=FaultTrigger.JOIN))
    joined = await meshfleet.join(network_name, ["cut"])
    assert joined.status is NetworkStatus.DEGRADED
    network = meshfleet.temporal.get_workflow_handle(network_workflow_id(network_name))

    async def read_twice() -> bool:
        """Whether two re-reads of the degraded mesh have completed (from the history)."""
        rereads: set[int] = set()
        completed = 0
        async for event in network.fetch_history_events():
            if event.HasField("activity_task_scheduled_event_attributes"):
                if REREAD in event.user_metadata.summary.data:
                    rereads.add(event.event_id)
            elif event.HasField("activity_task_completed_event_attributes"):
                done = event.activity_task_completed_event_attributes
                completed += done.scheduled_event_id in rereads
        return completed >= 2

    await eventually(read_twice, what="two re-reads of the partitioned mesh")
    # Read twice while still partitioned: still Degraded, the links still reported.
    still = await meshfleet.describe_network(network_name)
    assert still.status is NetworkStatus.DEGRADED
    assert still.not_ready_links

    backend.clear_faults("cut")

    async def connected() -> bool:
        status = (await meshfleet.describe_network(network_name)).status
        return status is NetworkStatus.CONNECTED

    await eventually(connected, what="the healed network to be Connected")
    described = await meshfleet.describe_network(network_name)
    assert described.not_ready_links == []
    assert any("healed" in entry.message for entry in described.log)


async def test_delete_needs_force_for_a_network_with_members_and_force_removes_them(
    backend: SimulatedFleetBackend, worker: Worker, meshfleet: MeshfleetClient, network_name: str
) -> None:
    """Without force the validator refuses; with force every member leaves, then it ends."""
    import pytest

    from engine.domain.errors import NotFoundError
    from engine.domain.network import NetworkRequestError

    backend.load(fleet([cluster("a", 1), cluster("b", 2)]))
    await meshfleet.create_network(network_name, ["a", "b"], settings=SETTINGS)

    with pytest.raises(NetworkRequestError, match="remove them first or delete with force"):
        await meshfleet.delete_network(network_name)

    result = await meshfleet.delete_network(network_name, force=True)

    assert result.deleted
    assert {m.cluster: m.outcome for m in result.members} == {
        "a": MembershipOutcome.REMOVED,
        "b": MembershipOutcome.REMOVED,
    }
    for name in ("a", "b"):
        assert (await backend.describe_member(name)).network is None
    with pytest.raises(NotFoundError, match="does not exist"):
        await meshfleet.describe_network(network_name)
    # The name is free again.
    again = await meshfleet.create_network(network_name, ["a"], settings=SETTINGS)
    assert again is not None
    assert again.members[0].outcome is MembershipOutcome.JOINED
    assert len(joined_events(backend, "a")) == 2


async def test_an_empty_network_is_created_and_deleted_without_force(
    backend: SimulatedFleetBackend, worker: Worker, meshfleet: MeshfleetClient, network_name: str
) -> None:
    """A network may start empty; deleting an empty one needs no force; the name cannot repeat."""
    import pytest

    from engine.domain.network import NetworkExistsError

    backend.load(fleet([cluster("a", 1)]))
    assert await meshfleet.create_network(network_name, settings=SETTINGS) is None
    with pytest.raises(NetworkExistsError, match="already exists"):
        await meshfleet.create_network(network_name, ["a"], settings=SETTINGS)
    described = await meshfleet.describe_network(network_name)
    assert described.status is NetworkStatus.NOT_CONNECTED
    assert described.members == []

    async def listed() -> bool:
        found = {s.name: s for s in await meshfleet.list_networks()}
        return network_name in found and found[network_name].members == 0

    await eventually(listed, what="the network to be listed")

    result = await meshfleet.delete_network(network_name)

    assert result.deleted

    async def unlisted() -> bool:
        return network_name not in {s.name for s in await meshfleet.list_networks()}

    await eventually(unlisted, what="the deleted network to leave the list")


async def test_a_newcomer_whose_mesh_fails_to_come_up_is_reported_failed_and_left_free(
    backend: SimulatedFleetBackend, worker: Worker, meshfleet: MeshfleetClient, network_name: str
) -> None:
    """A failed enable is that member's failure alone: the others join, the network stays sound."""
    from engine.domain.fleet import Fault, FaultKind, FaultTrigger

    backend.load(fleet([cluster("a", 1), cluster("b", 2), cluster("flaky", 3)]))
    backend.add_fault(
        "flaky", Fault(kind=FaultKind.FAIL, on=FaultTrigger.JOIN, message="apiserver crashloop")
    )

    result = await meshfleet.create_network(network_name, ["a", "b", "flaky"], settings=SETTINGS)

    assert result is not None
    outcomes = {m.cluster: m for m in result.members}
    assert outcomes["a"].outcome is MembershipOutcome.JOINED
    assert outcomes["b"].outcome is MembershipOutcome.JOINED
    assert outcomes["flaky"].outcome is MembershipOutcome.FAILED
    assert "apiserver crashloop" in (outcomes["flaky"].message or "")
    assert result.status is NetworkStatus.CONNECTED
    assert (await backend.describe_member("flaky")).network is None
    assert joined_events(backend, "flaky") == []
