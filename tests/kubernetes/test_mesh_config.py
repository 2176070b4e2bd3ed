"""Joining and removing configure the mesh in each member's own HelmChartProxy values.

The steps are called in the order the network workflow calls them (enable the
newcomer, connect it to every member, connect every member to it; remove is
disconnect both ways, then disable), against the CAAPH fleet, whose add-on
provider renders the values onto the members as the chart would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest

from activities.backends.kubernetes import ANNOTATION_OPERATIONS, KubernetesBackend
from activities.backends.kubernetes._values import ANNOTATION_PRE_MESH_VALUES
from engine.domain.backend import OperationProgress, OperationState
from engine.domain.errors import MeshfleetError
from tests.kubernetes.caaph import (
    CAAPH_MEMBERS,
    CONFIGMAPS,
    DEPLOYMENTS,
    NAMESPACE,
    PROXIES,
    SERVICES,
    USER_VALUES,
    CaaphFleet,
    address,
    caaph_fleet,
    proxy_name,
)

__all__ = ["caaph_fleet"]

CLUSTERS = "cluster.x-k8s.io/v1beta1/clusters"
ALPHA, BRAVO, CHARLIE, DELTA = CAAPH_MEMBERS
IDS = {ALPHA: 1, BRAVO: 2, CHARLIE: 3, DELTA: 4}


async def until_done(backend: KubernetesBackend, progress: OperationProgress) -> OperationProgress:
    """Poll an operation until it is done (bounded: the fixture's timeouts fail it)."""
    for _ in range(500):
        if progress.done:
            return progress
        await asyncio.sleep(0.02)
        progress = await backend.get_operation(progress.cluster, progress.key)
    raise AssertionError(f"{progress.kind.value} on {progress.cluster} never finished")


async def until_ready(backend: KubernetesBackend, members: Sequence[str]) -> None:
    """Poll the agents until every member reports every other ready (as wait_mesh_ready does)."""
    for _ in range(500):
        if not await backend.not_ready_links(list(members)):
            return
        await asyncio.sleep(0.02)
    links = await backend.not_ready_links(list(members))
    raise AssertionError(f"the agents never reported ready: {links}")


async def join(
    backend: KubernetesBackend, network: str, newcomers: Sequence[str], members: Sequence[str]
) -> None:
    """What the network workflow does to join ``newcomers`` to ``members``."""
    for name in newcomers:
        started = await backend.enable_mesh(
            name, network=network, idempotency_key=f"{network}/enable/{name}", cluster_id=IDS[name]
        )
        assert (await until_done(backend, started)).state is OperationState.SUCCEEDED
    everyone = [*members, *newcomers]
    for name in newcomers:
        await backend.connect_peers(
            name, [p for p in everyone if p != name], idempotency_key=f"{network}/c/{name}"
        )
    for name in members:
        await backend.connect_peers(name, list(newcomers), idempotency_key=f"{network}/c/{name}")


async def remove(backend: KubernetesBackend, name: str, peers: Sequence[str]) -> None:
    """What the network workflow does to remove ``name`` (after its drain)."""
    await backend.disconnect_peers(name, list(peers), idempotency_key=f"d/{name}")
    for peer in peers:
        await backend.disconnect_peers(peer, [name], idempotency_key=f"d/{peer}/{name}")
    await backend.disable_mesh(name, idempotency_key=f"disable/{name}")


def non_mesh_lines(text: str) -> list[str]:
    """The user's lines that meshfleet must keep byte for byte (mesh keys' own lines removed)."""
    mesh = ("  name:", "  id:", "  useAPIServer:", "  config:", "    enabled:", "    clusters:")
    kept = []
    skipping = False
    for line in text.splitlines(keepends=True):
        if line.startswith(mesh) or (skipping and line.startswith(("    - ", "      "))):
            skipping = line.startswith(("  config:", "    clusters:")) or skipping
            continue
        skipping = False
        kept.append(line)
    return kept


async def test_a_newcomer_gets_its_own_name_and_network_id_before_any_peer(
    caaph_fleet: CaaphFleet,
) -> None:
    backend = caaph_fleet.backend()

    started = await backend.enable_mesh(
        ALPHA, network="prod", idempotency_key="prod/enable/alpha", cluster_id=7
    )
    done = await until_done(backend, started)

    assert done.state is OperationState.SUCCEEDED, done.message
    values = caaph_fleet.mesh_values(ALPHA)
    assert values["cluster"] == {"name": ALPHA, "id": 7}
    assert values["useAPIServer"] is True
    assert values["enabled"] is True
    assert values["peers"] == []
    description = await backend.describe_member(ALPHA)
    assert description.network == "prod"
    assert description.cluster_id == 7  # rendered by the chart into cilium-config
    assert description.mesh_enabled


async def test_creating_a_network_of_three_lists_exactly_each_members_peers(
    caaph_fleet: CaaphFleet,
) -> None:
    backend = caaph_fleet.backend()

    await join(backend, "prod", [ALPHA, BRAVO, CHARLIE], [])

    for member in (ALPHA, BRAVO, CHARLIE):
        values = caaph_fleet.mesh_values(member)
        assert values["peers"] == sorted({ALPHA, BRAVO, CHARLIE} - {member})
        assert values["cluster"] == {"name": member, "id": IDS[member]}
        for entry in values["entries"]:  # from each peer's clustermesh-apiserver Service
            assert entry == {"name": entry["name"], "ips": [address(entry["name"])], "port": 2379}
    assert caaph_fleet.mesh_values(DELTA)["peers"] == []


async def test_values_meshfleet_does_not_own_are_kept_byte_for_byte(
    caaph_fleet: CaaphFleet,
) -> None:
    backend = caaph_fleet.backend()

    await join(backend, "prod", [ALPHA, BRAVO], [])

    text = caaph_fleet.values(ALPHA)
    assert non_mesh_lines(text) == non_mesh_lines(USER_VALUES)
    assert text.startswith(USER_VALUES.split("  name:")[0])  # comment and order untouched


async def test_a_fourth_join_updates_all_four(caaph_fleet: CaaphFleet) -> None:
    backend = caaph_fleet.backend()
    await join(backend, "prod", [ALPHA, BRAVO, CHARLIE], [])

    await join(backend, "prod", [DELTA], [ALPHA, BRAVO, CHARLIE])

    for member in CAAPH_MEMBERS:
        assert caaph_fleet.mesh_values(member)["peers"] == sorted(set(CAAPH_MEMBERS) - {member})
    await until_ready(backend, CAAPH_MEMBERS)  # every agent of every member, every other


async def test_removing_a_member_updates_the_rest_and_restores_its_own_values(
    caaph_fleet: CaaphFleet,
) -> None:
    backend = caaph_fleet.backend()
    await join(backend, "prod", list(CAAPH_MEMBERS), [])

    await remove(backend, BRAVO, [ALPHA, CHARLIE, DELTA])

    rest = {ALPHA, CHARLIE, DELTA}
    for member in rest:
        assert caaph_fleet.mesh_values(member)["peers"] == sorted(rest - {member})
    assert caaph_fleet.values(BRAVO) == USER_VALUES
    proxy = caaph_fleet.management.obj(PROXIES, NAMESPACE, proxy_name(BRAVO))
    assert ANNOTATION_PRE_MESH_VALUES not in (proxy["metadata"].get("annotations") or {})
    assert (await backend.describe_member(BRAVO)).network is None


async def test_a_retried_join_step_changes_nothing(caaph_fleet: CaaphFleet) -> None:
    backend = caaph_fleet.backend()
    await join(backend, "prod", [ALPHA, BRAVO], [])
    before = {m: caaph_fleet.values(m) for m in (ALPHA, BRAVO)}

    await join(caaph_fleet.backend(), "prod", [ALPHA, BRAVO], [])

    assert {m: caaph_fleet.values(m) for m in (ALPHA, BRAVO)} == before


async def test_a_meshed_cluster_id_is_never_changed(caaph_fleet: CaaphFleet) -> None:
    backend = caaph_fleet.backend()
    await join(backend, "prod", [ALPHA, BRAVO], [])

    with pytest.raises(MeshfleetError, match="break identities"):
        await backend.enable_mesh(ALPHA, network="prod", idempotency_key="again", cluster_id=9)

    assert caaph_fleet.mesh_values(ALPHA)["cluster"]["id"] == IDS[ALPHA]


async def test_a_cilium_upgrade_keeps_the_mesh_values(caaph_fleet: CaaphFleet) -> None:
    backend = caaph_fleet.backend()
    await join(backend, "prod", [ALPHA, BRAVO, CHARLIE], [])
    meshed = caaph_fleet.values(ALPHA)

    await backend.start_cilium_upgrade(ALPHA, "1.18.6", idempotency_key="up/alpha")

    proxy = caaph_fleet.management.obj(PROXIES, NAMESPACE, proxy_name(ALPHA))
    assert proxy["spec"]["version"] == "1.18.6"
    assert proxy["spec"]["valuesTemplate"] == meshed


# --- optimistic concurrency -------------------------------------------------------------------


async def test_two_joins_of_one_cluster_to_two_networks_at_once_exactly_one_wins(
    caaph_fleet: CaaphFleet,
) -> None:
    """Both read cilium-config unclaimed; their claims race; the loser sees the winner's."""
    member = caaph_fleet.members[ALPHA]
    member.hold_patches(CONFIGMAPS, "kube-system", "cilium-config", parties=2)
    backend = caaph_fleet.backend()

    outcomes = await asyncio.gather(
        backend.enable_mesh(ALPHA, network="prod", idempotency_key="prod/e", cluster_id=1),
        backend.enable_mesh(ALPHA, network="staging", idempotency_key="staging/e", cluster_id=5),
        return_exceptions=True,
    )

    won = [o for o in outcomes if isinstance(o, OperationProgress)]
    lost = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(won) == 1, outcomes
    assert len(lost) == 1, outcomes
    winner = "prod" if won[0].key == "prod/e" else "staging"
    loser = "staging" if winner == "prod" else "prod"
    assert isinstance(lost[0], MeshfleetError)
    assert f"already belongs to network {winner!r}, not {loser!r}" in str(lost[0])
    assert member.conflicts >= 1  # the race really happened
    assert (await backend.describe_member(ALPHA)).network == winner
    assert caaph_fleet.mesh_values(ALPHA)["cluster"]["id"] == (1 if winner == "prod" else 5)


async def test_operation_records_started_at_once_are_all_kept(caaph_fleet: CaaphFleet) -> None:
    """Two operations recorded on one Cluster at the same moment: neither record is lost."""
    caaph_fleet.management.hold_patches(CLUSTERS, NAMESPACE, ALPHA, parties=2)
    backend = caaph_fleet.backend()

    await asyncio.gather(
        backend.enable_mesh(ALPHA, network="prod", idempotency_key="prod/e", cluster_id=1),
        caaph_fleet.backend().start_cilium_upgrade(ALPHA, "1.17.10", idempotency_key="up/a"),
    )

    cluster = caaph_fleet.management.obj(CLUSTERS, NAMESPACE, ALPHA)
    records = json.loads(cluster["metadata"]["annotations"][ANNOTATION_OPERATIONS])
    assert sorted(records) == ["prod/e", "up/a"]
    assert caaph_fleet.management.conflicts >= 1  # the race really happened


# --- readiness --------------------------------------------------------------------------------


async def test_enabling_is_done_only_once_the_newcomers_apiserver_is_rolled_out_and_reachable(
    caaph_fleet: CaaphFleet,
) -> None:
    caaph_fleet.helm.paused.add(ALPHA)  # the chart has not rendered the new values yet
    emu = caaph_fleet.members[ALPHA]
    backend = caaph_fleet.backend()

    started = await backend.enable_mesh(ALPHA, network="prod", idempotency_key="e", cluster_id=1)
    assert started.state is OperationState.RUNNING
    assert started.phase == "clustermesh-apiserver not deployed yet"

    caaph_fleet.helm.render(ALPHA)
    emu.change(
        DEPLOYMENTS, "kube-system", "clustermesh-apiserver", {"status": {"readyReplicas": 0}}
    )
    emu.change(SERVICES, "kube-system", "clustermesh-apiserver", {"status": {"loadBalancer": None}})
    rolling = await backend.get_operation(ALPHA, "e")
    assert rolling.state is OperationState.RUNNING
    assert rolling.phase == "clustermesh-apiserver 0/1 ready"

    emu.change(
        DEPLOYMENTS, "kube-system", "clustermesh-apiserver", {"status": {"readyReplicas": 1}}
    )
    unreachable = await backend.get_operation(ALPHA, "e")
    assert unreachable.state is OperationState.RUNNING
    assert "waiting for the clustermesh-apiserver LoadBalancer address" in unreachable.phase

    lb = {"loadBalancer": {"ingress": [{"ip": address(ALPHA)}]}}
    emu.change(SERVICES, "kube-system", "clustermesh-apiserver", {"status": lb})
    assert (await backend.get_operation(ALPHA, "e")).state is OperationState.SUCCEEDED


async def test_an_apiserver_service_other_clusters_cannot_reach_fails_the_join_clearly(
    caaph_fleet: CaaphFleet,
) -> None:
    caaph_fleet.helm.paused.add(ALPHA)
    backend = caaph_fleet.backend()
    await backend.enable_mesh(ALPHA, network="prod", idempotency_key="e", cluster_id=1)
    caaph_fleet.helm.render(ALPHA)
    spec = {"spec": {"type": "ClusterIP"}, "status": {"loadBalancer": None}}
    caaph_fleet.members[ALPHA].change(SERVICES, "kube-system", "clustermesh-apiserver", spec)

    progress = await backend.get_operation(ALPHA, "e")

    assert progress.state is OperationState.FAILED
    assert progress.message is not None
    assert "is ClusterIP, unreachable from other clusters" in progress.message
    assert "clustermesh.apiserver.service.type" in progress.message


async def test_without_an_allocation_a_cluster_id_of_zero_is_never_written(
    caaph_fleet: CaaphFleet,
) -> None:
    backend = caaph_fleet.backend()  # cilium-config says cluster-id 0 (Cilium's default)

    with pytest.raises(MeshfleetError, match=r"no valid cluster id to write \(got 0"):
        await backend.enable_mesh(ALPHA, network="prod", idempotency_key="e")

    assert caaph_fleet.values(ALPHA) == USER_VALUES
