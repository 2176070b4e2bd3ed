"""Control-plane upgrades through Cluster API and bundled-Cilium upgrades, followed to the end."""

from __future__ import annotations

import datetime as dt

import pytest
from temporalio.testing import ActivityEnvironment

from activities.backends.kubernetes import (
    ANNOTATION_OPERATIONS,
    CiliumUpgradeNotPossibleError,
    ControlPlaneUpgradeNotPossibleError,
    KubernetesBackend,
)
from activities.common import wait_for
from engine.domain.backend import (
    OperationConflictError,
    OperationInProgressError,
    OperationKind,
    OperationProgress,
    OperationState,
)
from engine.domain.errors import NotFoundError
from tests.kubernetes.emulated_fleet import Fleet
from tests.kubernetes.seeds import CAPI_MEMBER, FLEET_NAMESPACE, VALUES_TEMPLATE

CLUSTERS = "cluster.x-k8s.io/v1beta1/clusters"
PROXIES = "addons.cluster.x-k8s.io/v1alpha1/helmchartproxies"


async def until_done(
    backend: KubernetesBackend, cluster: str, key: str, seconds: float = 10
) -> OperationProgress:
    """Poll get_operation until the operation is done (a bounded wait, as the activity does)."""

    async def check() -> OperationProgress | None:
        progress = await backend.get_operation(cluster, key)
        return progress if progress.done else None

    return await ActivityEnvironment().run(  # wait_for heartbeats, as in its activity
        wait_for,
        check,
        timeout=dt.timedelta(seconds=seconds),
        interval=dt.timedelta(seconds=0.05),
        describe=lambda: f"operation {key}",
    )


async def test_a_control_plane_upgrade_completes_through_cluster_api(fleet: Fleet) -> None:
    fleet.start_controllers()
    backend = fleet.backend()

    started = await backend.start_control_plane_upgrade(
        CAPI_MEMBER, "1.33.2", idempotency_key="run1/eu-north-1/cp"
    )
    done = await until_done(backend, CAPI_MEMBER, "run1/eu-north-1/cp")

    assert started.state is OperationState.RUNNING
    assert started.kind is OperationKind.CONTROL_PLANE_UPGRADE
    assert done.state is OperationState.SUCCEEDED, done.message
    assert done.percent == 100
    cluster = fleet.management.obj(CLUSTERS, FLEET_NAMESPACE, CAPI_MEMBER)
    assert cluster["spec"]["topology"]["version"] == "v1.33.2"
    assert (await backend.describe_member(CAPI_MEMBER)).kubernetes_version == "1.33.2"


async def test_a_control_plane_already_at_the_target_is_done_at_once(fleet: Fleet) -> None:
    progress = await fleet.backend().start_control_plane_upgrade(
        CAPI_MEMBER, "1.32.6", idempotency_key="noop"
    )

    assert progress.state is OperationState.SUCCEEDED


async def test_a_retried_start_after_a_crash_resumes_the_same_upgrade(fleet: Fleet) -> None:
    """A new worker with the same key follows the running upgrade; another key must wait."""
    first = await fleet.backend().start_control_plane_upgrade(
        CAPI_MEMBER, "1.33.2", idempotency_key="run1/cp"
    )
    restarted = fleet.backend()

    again = await restarted.start_control_plane_upgrade(
        CAPI_MEMBER, "1.33.2", idempotency_key="run1/cp"
    )

    assert again.started_at == first.started_at
    assert again.state is OperationState.RUNNING
    with pytest.raises(OperationInProgressError, match="run1/cp"):
        await restarted.start_control_plane_upgrade(
            CAPI_MEMBER, "1.33.2", idempotency_key="run2/cp"
        )
    with pytest.raises(OperationConflictError):
        await restarted.start_control_plane_upgrade(
            CAPI_MEMBER, "1.33.3", idempotency_key="run1/cp"
        )
    fleet.start_controllers()
    assert (await until_done(restarted, CAPI_MEMBER, "run1/cp")).state is OperationState.SUCCEEDED


async def test_a_stuck_control_plane_upgrade_times_out_into_a_clear_failure(fleet: Fleet) -> None:
    fleet.write_access({"controlPlaneUpgradeTimeout": "1s"})
    fleet.start_controllers(stuck=True)
    backend = fleet.backend()

    await backend.start_control_plane_upgrade(CAPI_MEMBER, "1.33.2", idempotency_key="cp")
    failed = await until_done(backend, CAPI_MEMBER, "cp")

    assert failed.state is OperationState.FAILED
    assert failed.message is not None
    assert "stuck" in failed.message
    assert "1/3 machines updated" in failed.message
    # The outcome is recorded on the Cluster: a new worker reads the same failure.
    again = await fleet.backend().get_operation(CAPI_MEMBER, "cp")
    assert again.state is OperationState.FAILED
    assert again.message == failed.message


async def test_a_cluster_api_error_condition_fails_the_upgrade(fleet: Fleet) -> None:
    backend = fleet.backend()
    await backend.start_control_plane_upgrade(CAPI_MEMBER, "1.33.2", idempotency_key="cp")
    fleet.management.change(
        CLUSTERS,
        FLEET_NAMESPACE,
        CAPI_MEMBER,
        {
            "status": {
                "conditions": [
                    {
                        "type": "TopologyReconciled",
                        "status": "False",
                        "severity": "Error",
                        "reason": "TopologyReconcileFailed",
                        "message": "version v1.33.2 not allowed by ClusterClass",
                    }
                ]
            }
        },
    )

    failed = await backend.get_operation(CAPI_MEMBER, "cp")

    assert failed.state is OperationState.FAILED
    assert failed.message is not None
    assert "TopologyReconcileFailed" in failed.message


async def test_control_planes_never_move_down_and_need_a_patch_version(fleet: Fleet) -> None:
    backend = fleet.backend()
    with pytest.raises(ControlPlaneUpgradeNotPossibleError, match="never move down"):
        await backend.start_control_plane_upgrade(CAPI_MEMBER, "1.31.4", idempotency_key="k1")
    with pytest.raises(Exception, match="patch number"):
        await backend.start_control_plane_upgrade(CAPI_MEMBER, "1.33", idempotency_key="k2")


async def test_a_member_reached_by_context_cannot_upgrade_its_control_plane(fleet: Fleet) -> None:
    with pytest.raises(ControlPlaneUpgradeNotPossibleError, match="'us-east-1'"):
        await fleet.backend().start_control_plane_upgrade(
            "us-east-1", "1.34.1", idempotency_key="k"
        )


async def test_an_unknown_operation_key_is_not_found(fleet: Fleet) -> None:
    with pytest.raises(NotFoundError, match="nope"):
        await fleet.backend().get_operation(CAPI_MEMBER, "nope")


async def test_cilium_upgrade_through_the_helm_chart_proxy_keeps_clustermesh_values(
    fleet: Fleet,
) -> None:
    fleet.start_controllers()
    backend = fleet.backend()

    started = await backend.start_cilium_upgrade(CAPI_MEMBER, "1.18.6", idempotency_key="cilium")
    done = await until_done(backend, CAPI_MEMBER, "cilium")

    assert started.state is OperationState.RUNNING
    assert done.state is OperationState.SUCCEEDED, done.message
    proxy = fleet.management.obj(PROXIES, FLEET_NAMESPACE, "cilium-eu")
    assert proxy["spec"]["version"] == "1.18.6"
    assert proxy["spec"]["valuesTemplate"] == VALUES_TEMPLATE
    progress = await backend.get_operation(CAPI_MEMBER, "cilium")
    assert [(c.name, c.version) for c in progress.components] == [
        ("cilium", "1.18.6"),
        ("cilium-operator", "1.18.6"),
        ("clustermesh-apiserver", "1.18.6"),
    ]
    assert (await backend.describe_member(CAPI_MEMBER)).cilium_version == "1.18.6"


async def test_a_helm_chart_proxy_without_the_mesh_peers_is_refused(fleet: Fleet) -> None:
    """An upgrade rendering values without clustermesh.config.clusters would disconnect."""
    fleet.management.change(
        PROXIES, FLEET_NAMESPACE, "cilium-eu", {"spec": {"valuesTemplate": "routingMode: native\n"}}
    )

    with pytest.raises(CiliumUpgradeNotPossibleError, match="disconnect"):
        await fleet.backend().start_cilium_upgrade(CAPI_MEMBER, "1.18.6", idempotency_key="c")
    proxy = fleet.management.obj(PROXIES, FLEET_NAMESPACE, "cilium-eu")
    assert proxy["spec"]["version"] == "1.17.9"


async def test_a_helm_chart_proxy_selecting_several_clusters_is_refused(fleet: Fleet) -> None:
    fleet.management.change(
        PROXIES,
        FLEET_NAMESPACE,
        "cilium-eu",
        {
            "spec": {
                "clusterSelector": {
                    "matchLabels": None,
                    "matchExpressions": [{"key": "env", "operator": "Exists"}],
                }
            }
        },
    )

    with pytest.raises(CiliumUpgradeNotPossibleError, match="sandbox"):
        await fleet.backend().start_cilium_upgrade(CAPI_MEMBER, "1.18.6", idempotency_key="c")


async def test_provider_managed_cilium_is_verified_not_upgraded(fleet: Fleet) -> None:
    member = fleet.members["us-east-1"]
    member.change(
        "apps/v1/daemonsets",
        "kube-system",
        "cilium",
        {"metadata": {"labels": {"kubernetes.azure.com/managedby": "aks"}}},
    )
    backend = fleet.backend()

    arrived = await backend.start_cilium_upgrade("us-east-1", "1.17.9", idempotency_key="ok")
    missing = await backend.start_cilium_upgrade("us-east-1", "1.18.6", idempotency_key="no")

    assert arrived.state is OperationState.SUCCEEDED
    assert missing.state is OperationState.FAILED
    assert missing.message is not None
    assert "provider-managed Cilium on 'us-east-1' runs 1.17.9" in missing.message
    config = member.obj("v1/configmaps", "kube-system", "cilium-config")
    assert "no" in config["metadata"]["annotations"][ANNOTATION_OPERATIONS]


async def test_a_member_with_no_way_to_upgrade_cilium_fails_naming_it(fleet: Fleet) -> None:
    with pytest.raises(CiliumUpgradeNotPossibleError, match="'ap-south-1'"):
        await fleet.backend().start_cilium_upgrade("ap-south-1", "1.18.6", idempotency_key="c")
