"""Mesh health from ``cilium-dbg status -o json`` in every agent, explained as Cilium does."""

from __future__ import annotations

import json

from engine.domain.mesh import (
    REASON_CONFIG_NOT_FOUND,
    REASON_CONFIG_UNKNOWN,
    REASON_FAILURES_GREW,
    REASON_MISSING,
    REASON_SYNC_IN_PROGRESS,
    REASON_SYNC_UNKNOWN,
    NotReadyLink,
)
from tests.kubernetes.agents import agent_status, remote_cluster, sample
from tests.kubernetes.emulated_fleet import Fleet
from tests.kubernetes.seeds import MEMBERS, OFFLINE


def reasons(links: list[NotReadyLink], viewer: str) -> dict[str, str]:
    return {link.peer: link.reason for link in links if link.viewer == viewer}


async def test_a_healthy_mesh_is_healthy_and_every_agent_pod_was_asked(fleet: Fleet) -> None:
    health = await fleet.backend().mesh_health(list(MEMBERS))

    assert health.not_ready_links() == []
    assert health.healthy()
    view = health.view("ap-south-1")
    assert view is not None
    assert view.agent is not None
    assert view.agent.version == "1.17.9"
    assert view.clustermesh_apiserver is not None
    assert view.clustermesh_apiserver.rolled_out
    assert sorted(t.pod for t in fleet.agents.calls if t.cluster == "ap-south-1") == [
        "cilium-ap-south-1-0",
        "cilium-ap-south-1-1",
    ]


async def test_the_healthy_sample_parses_as_fully_ready_peers(fleet: Fleet) -> None:
    fleet.agents.outputs["ap-south-1"] = sample("healthy")

    health = await fleet.backend().mesh_health(list(MEMBERS))

    assert reasons(health.not_ready_links(), "ap-south-1") == {}
    view = health.view("ap-south-1")
    assert view is not None
    eu = view.remote("eu-north-1")
    assert eu is not None
    assert eu.num_failures == 2  # one failure seen by each of the two agents


async def test_a_degraded_agent_is_explained_in_cilium_clustermesh_status_order(
    fleet: Fleet,
) -> None:
    """Never connected: the status text; connected without configuration: not found."""
    fleet.agents.outputs["ap-south-1"] = sample("degraded")

    health = await fleet.backend().mesh_health(list(MEMBERS))

    assert reasons(health.not_ready_links(), "ap-south-1") == {
        "eu-north-1": "Waiting for initial connection to be established",
        "us-east-1": REASON_CONFIG_NOT_FOUND,
    }
    assert not health.healthy()


async def test_an_old_agent_without_connected_or_synced_is_not_ready(fleet: Fleet) -> None:
    """Fields an old Cilium does not emit are false: its peers read as not connected."""
    old = remote_cluster("eu-north-1", 4)
    for absent in ("connected", "synced", "num-endpoint-slices"):
        old.pop(absent, None)
    old["status"] = "etcd: 1/1 connected: https://eu-north-1.mesh.cilium.io:2379 - 3.5.4"
    fleet.agents.outputs["ap-south-1"] = agent_status([old, remote_cluster("us-east-1", 9)])

    health = await fleet.backend().mesh_health(list(MEMBERS))

    assert reasons(health.not_ready_links(), "ap-south-1") == {"eu-north-1": old["status"]}


async def test_omitted_config_and_synced_read_as_unknown_in_that_order(fleet: Fleet) -> None:
    no_config = remote_cluster("eu-north-1", 4)
    del no_config["config"], no_config["ready"]
    no_synced = remote_cluster("us-east-1", 9)
    del no_synced["synced"], no_synced["ready"]
    fleet.agents.outputs["ap-south-1"] = agent_status([no_config, no_synced])
    partly = remote_cluster("ap-south-1", 3)
    partly["ready"] = False
    partly["synced"] = {"nodes": True, "identities": True}
    fleet.agents.outputs["us-east-1"] = agent_status([partly, remote_cluster("eu-north-1", 4)])

    health = await fleet.backend().mesh_health(list(MEMBERS))

    links = health.not_ready_links()
    assert reasons(links, "ap-south-1") == {
        "eu-north-1": REASON_CONFIG_UNKNOWN,
        "us-east-1": REASON_SYNC_UNKNOWN,
    }
    assert reasons(links, "us-east-1") == {"ap-south-1": REASON_SYNC_IN_PROGRESS}


async def test_an_agent_without_a_cluster_mesh_section_misses_every_peer(fleet: Fleet) -> None:
    fleet.agents.outputs["cilium-us-east-1-1"] = agent_status(None)

    health = await fleet.backend().mesh_health(list(MEMBERS))

    assert reasons(health.not_ready_links(), "us-east-1") == {
        "ap-south-1": REASON_MISSING,
        "eu-north-1": REASON_MISSING,
    }


async def test_failures_growing_on_any_agent_are_reported(fleet: Fleet) -> None:
    backend = fleet.backend()
    before = await backend.mesh_health(list(MEMBERS))
    fleet.agents.outputs["cilium-eu-north-1-0"] = agent_status(
        [remote_cluster("ap-south-1", 3, failures=1), remote_cluster("us-east-1", 9)]
    )

    after = await backend.mesh_health(list(MEMBERS))

    assert after.healthy()
    assert reasons(after.not_ready_links(before), "eu-north-1") == {
        "ap-south-1": REASON_FAILURES_GREW
    }


async def test_an_agent_rollout_in_progress_makes_the_mesh_unhealthy(fleet: Fleet) -> None:
    fleet.members["us-east-1"].change(
        "apps/v1/daemonsets", "kube-system", "cilium", {"status": {"numberReady": 1}}
    )

    health = await fleet.backend().mesh_health(list(MEMBERS))

    assert reasons(health.not_ready_links(), "us-east-1") == {
        "*": "agent not rolled out (1/2 ready, 2 updated)"
    }


async def test_a_member_whose_api_is_down_is_reported_not_raised(fleet: Fleet) -> None:
    health = await fleet.backend().mesh_health([*MEMBERS, OFFLINE])

    view = health.view(OFFLINE)
    assert view is not None
    assert not view.api_available
    assert reasons(health.not_ready_links(), OFFLINE) == {"*": view.error}
    assert reasons(health.not_ready_links(), "ap-south-1") == {OFFLINE: REASON_MISSING}


async def test_unreadable_agent_output_is_an_error_of_that_member(fleet: Fleet) -> None:
    fleet.agents.outputs["ap-south-1"] = "Error: cannot connect to the Cilium API"
    fleet.agents.outputs["us-east-1"] = json.dumps({"cluster-mesh": {"clusters": [{"name": 7}]}})

    health = await fleet.backend().mesh_health(list(MEMBERS))

    for member in ("ap-south-1", "us-east-1"):
        view = health.view(member)
        assert view is not None
        assert view.error is not None
        assert "cilium-dbg status failed" in view.error
