"""Describing members and checking the join rules against what clusters report."""

from __future__ import annotations

import pytest

from engine.domain.errors import NotFoundError
from engine.domain.fleet import NetworkMode
from engine.domain.membership import MembershipRule
from tests.kubernetes.emulated_fleet import Fleet
from tests.kubernetes.seeds import OFFLINE


async def test_describe_reads_versions_cilium_config_cidrs_and_mesh_state(fleet: Fleet) -> None:
    """/version, the agent image tag, cilium-config, nodes and the mesh Secret, as read."""
    member = await fleet.backend().describe_member("ap-south-1")

    assert member.kubernetes_version == "1.33.2"
    assert member.cilium_version == "1.17.9"
    assert member.cluster_id == 3
    assert member.network_mode is NetworkMode.FLAT
    assert member.pod_cidrs == ["10.3.0.0/24", "10.3.1.0/24"]
    assert member.network == "prod"
    assert member.mesh_enabled
    assert not member.self_managed_mesh
    assert member.mesh_peers == ["eu-north-1", "us-east-1"]
    assert member.nodes == 2
    assert member.healthy, member.reason
    assert member.update_group == "canary"


async def test_a_discovered_cluster_api_member_is_reached_through_its_kubeconfig_secret(
    fleet: Fleet,
) -> None:
    """eu-north-1 is not listed: the label selector finds its Cluster, the Secret its API."""
    backend = fleet.backend()

    member = await backend.describe_member("eu-north-1")

    assert member.kubernetes_version == "1.32.6"
    assert member.cluster_id == 4
    assert member.labels["env"] == "prod"
    assert "eu-north-1" in await backend.clients.names()
    assert "sandbox" not in await backend.clients.names()


async def test_an_unknown_member_is_not_found(fleet: Fleet) -> None:
    with pytest.raises(NotFoundError, match="sandbox"):
        await fleet.backend().describe_member("sandbox")


async def test_an_unreachable_member_is_described_as_unavailable_not_raised(fleet: Fleet) -> None:
    member = await fleet.backend().describe_member(OFFLINE)

    assert not member.api_available
    assert not member.healthy
    assert member.reason is not None
    assert "unreachable" in member.reason


async def test_a_member_in_tunnel_mode_is_rejected_at_join_with_the_flat_network_rule_named(
    fleet: Fleet,
) -> None:
    fleet.members["ap-south-1"].change(
        "v1/configmaps",
        "kube-system",
        "cilium-config",
        {
            "metadata": {"labels": {"meshfleet.io/network": None}},
            "data": {"routing-mode": "tunnel", "tunnel-protocol": "vxlan"},
        },
    )
    fleet.members["ap-south-1"].change(
        "v1/secrets", "kube-system", "cilium-clustermesh", {"data": None}
    )

    check = await fleet.backend().check_join_prerequisites(
        "ap-south-1", "prod", ["us-east-1", "eu-north-1"]
    )

    assert not check.ok
    assert [f.rule for f in check.failed] == [MembershipRule.FLAT_NETWORK]
    assert "overlay" in check.failed[0].message


async def test_a_member_with_a_mesh_meshfleet_did_not_record_is_self_managed(
    fleet: Fleet,
) -> None:
    """Peers in cilium-clustermesh but no meshfleet.io/network label: someone else's mesh."""
    fleet.members["ap-south-1"].change(
        "v1/configmaps",
        "kube-system",
        "cilium-config",
        {"metadata": {"labels": {"meshfleet.io/network": None}}},
    )

    check = await fleet.backend().check_join_prerequisites("ap-south-1", "prod", ["us-east-1"])

    assert MembershipRule.NO_SELF_MANAGED_MESH in [f.rule for f in check.failed]


async def test_a_member_of_another_network_cannot_join(fleet: Fleet) -> None:
    check = await fleet.backend().check_join_prerequisites("us-east-1", "staging", ["ap-south-1"])

    assert [f.rule for f in check.failed] == [MembershipRule.SINGLE_NETWORK]
