"""The protocol's shared models: Cilium's RemoteCluster shape, the mesh gate, join rules."""

from __future__ import annotations

import datetime as dt

from activities.backends.kubernetes._objects import remote_cluster_status
from activities.backends.simulated import SimulatedFleetBackend
from engine.domain.backend import FleetBackend
from engine.domain.fleet import NetworkMode
from engine.domain.membership import MemberDescription, MembershipRule, join_prerequisite_failures
from engine.domain.mesh import REASON_CONFIG_NOT_FOUND, REASON_MISSING, MemberMeshView, MeshHealth
from tests.backends.conftest import LoadWorld, cluster

#: The shapes of reference/samples/cilium-dbg-status.cluster-mesh.degraded.json.
DEGRADED = [
    {
        "name": "eu-north-1",
        "status": "Waiting for initial connection to be established",
        "num-failures": 4,
        "last-failure": "2026-11-26T03:58:40.120Z",
    },
    {
        "name": "us-east-1",
        "connected": True,
        "status": "etcd: 1/1 connected",
        "num-nodes": 5,
        "num-endpoints": 12,
        "config": {"cluster-id": 9, "kvstoremesh": True, "required": True, "sync-canaries": True},
        "synced": {"nodes": True, "identities": True},
    },
]


def test_the_simulated_backend_implements_the_fleet_backend_protocol(
    backend: SimulatedFleetBackend,
) -> None:
    """Activities can take it wherever a FleetBackend is expected."""
    assert isinstance(backend, FleetBackend)


def test_not_ready_peers_are_explained_in_cilium_clustermesh_status_order() -> None:
    """Not connected -> the status text; required but not retrieved -> config not found;
    an expected peer missing from the list is reported too."""
    view = MemberMeshView(
        cluster="eu-west-1",
        remote_clusters=[remote_cluster_status(entry) for entry in DEGRADED],
    )
    members = [view, MemberMeshView(cluster="eu-north-1"), MemberMeshView(cluster="us-east-1")]
    health = MeshHealth(observed_at=dt.datetime.now(dt.UTC), members=members)
    reasons = {
        (link.viewer, link.peer): link.reason
        for link in health.not_ready_links()
        if link.viewer == "eu-west-1"
    }
    assert reasons == {
        ("eu-west-1", "eu-north-1"): "Waiting for initial connection to be established",
        ("eu-west-1", "us-east-1"): REASON_CONFIG_NOT_FOUND,
    }
    assert (
        "eu-north-1",
        "eu-west-1",
        REASON_MISSING,
    ) in {(link.viewer, link.peer, link.reason) for link in health.not_ready_links()}
    assert not health.healthy()


def test_join_rules_report_every_broken_rule_at_once() -> None:
    """Old Kubernetes, no ACNS, overlay, self-managed mesh, a taken id, overlapping CIDRs."""
    candidate = MemberDescription(
        name="newcomer",
        kubernetes_version="1.31.4",
        cilium_version="1.16.16",
        cluster_id=1,
        pod_cidrs=["10.1.128.0/17"],
        network_mode=NetworkMode.OVERLAY,
        acns=False,
        self_managed_mesh=True,
    )
    member = MemberDescription(
        name="alpha",
        kubernetes_version="1.32.6",
        cilium_version="1.17.9",
        cluster_id=1,
        pod_cidrs=["10.1.0.0/16"],
        network="prod-mesh",
    )
    failed = {f.rule for f in join_prerequisite_failures(candidate, "prod-mesh", [member])}
    assert failed == {
        MembershipRule.KUBERNETES_VERSION,
        MembershipRule.CILIUM_DATAPLANE,
        MembershipRule.FLAT_NETWORK,
        MembershipRule.NO_SELF_MANAGED_MESH,
        MembershipRule.CLUSTER_ID,
        MembershipRule.POD_CIDRS,
    }


async def test_a_cluster_of_another_network_cannot_join(load_world: LoadWorld) -> None:
    """The simulated backend reports the network it recorded; the rule reads it."""
    backend = load_world(
        clusters=[
            cluster("alpha", 1),
            cluster("bravo", 2),
            cluster("charlie", 3),
            cluster("delta", 4),
        ],
        networks=[
            {"name": "prod-mesh", "members": ["alpha", "bravo", "charlie"]},
            {"name": "other-mesh", "members": ["delta"]},
        ],
    )
    check = await backend.check_join_prerequisites("delta", "prod-mesh", ["alpha", "bravo"])
    assert [f.rule for f in check.failed] == [MembershipRule.SINGLE_NETWORK]
    assert not check.ok
