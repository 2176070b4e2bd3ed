"""Controllers: Cluster API, the Helm add-on provider and the kubelet, moving emulated status."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from tests.kubernetes.emulator import ClusterEmulator
from tests.kubernetes.seeds import CAPI_MEMBER, FLEET_NAMESPACE, cilium_images


@dataclass
class Controllers:
    """Moves emulated status as the real controllers would, one step per tick."""

    management: ClusterEmulator
    member: ClusterEmulator
    tick: float = 0.02
    #: A control plane that never gets past its first machine (a stuck upgrade).
    stuck: bool = False
    #: The Helm add-on provider, with ``install_cilium``, rolls HelmChartProxy versions out.
    install_cilium: bool = True

    async def run(self) -> None:
        while True:
            self._cluster_api()
            if self.install_cilium:
                self._helm_and_kubelet()
            await asyncio.sleep(self.tick)

    def _cluster_api(self) -> None:
        clusters = "cluster.x-k8s.io/v1beta1/clusters"
        kcps = "controlplane.cluster.x-k8s.io/v1beta1/kubeadmcontrolplanes"
        cluster = self.management.obj(clusters, FLEET_NAMESPACE, CAPI_MEMBER)
        want = cluster["spec"]["topology"]["version"]
        name = f"{CAPI_MEMBER}-control-plane"
        plane = self.management.obj(kcps, FLEET_NAMESPACE, name)
        status = plane["status"]
        if plane["spec"]["version"] != want:  # the topology controller
            self.management.change(kcps, FLEET_NAMESPACE, name, {"spec": {"version": want}})
            self.management.change(kcps, FLEET_NAMESPACE, name, {"status": {"updatedReplicas": 0}})
            self._conditions(False, "RollingUpdateInProgress")
            return
        replicas = plane["spec"]["replicas"]
        if status["updatedReplicas"] < replicas:  # one machine replaced per tick
            if self.stuck and status["updatedReplicas"] >= 1:
                return
            self.management.change(
                kcps,
                FLEET_NAMESPACE,
                name,
                {"status": {"updatedReplicas": status["updatedReplicas"] + 1}},
            )
            return
        if status["version"] != want:
            self.management.change(kcps, FLEET_NAMESPACE, name, {"status": {"version": want}})
            self.member.git_version = want
            self._conditions(True, None)

    def _conditions(self, ready: bool, reason: str | None) -> None:
        condition: dict[str, Any] = {"type": "ControlPlaneReady", "status": str(ready)}
        if reason:
            condition.update(reason=reason, severity="Warning", message="Rolling 3 replicas")
        self.management.change(
            "cluster.x-k8s.io/v1beta1/clusters",
            FLEET_NAMESPACE,
            CAPI_MEMBER,
            {"status": {"conditions": [{"type": "Ready", "status": str(ready)}, condition]}},
        )

    def _helm_and_kubelet(self) -> None:
        proxies = "addons.cluster.x-k8s.io/v1alpha1/helmchartproxies"
        version = self.management.obj(proxies, FLEET_NAMESPACE, "cilium-eu")["spec"]["version"]
        images = cilium_images(version.lstrip("v"))
        agent = self.member.obj("apps/v1/daemonsets", "kube-system", "cilium")
        if agent["spec"]["template"]["spec"]["containers"][0]["image"] != images["agent"]:
            # helm upgrade: new pod templates, counts restart
            generation = agent["metadata"]["generation"] + 1
            self.member.change(
                "apps/v1/daemonsets",
                "kube-system",
                "cilium",
                {
                    "metadata": {"generation": generation},
                    "spec": {
                        "template": {
                            "spec": {
                                "containers": [{"name": "cilium-agent", "image": images["agent"]}]
                            }
                        }
                    },
                    "status": {"updatedNumberScheduled": 0, "observedGeneration": generation},
                },
            )
            for name, container in (
                ("cilium-operator", "operator"),
                ("clustermesh-apiserver", "apiserver"),
            ):
                deployment = self.member.obj("apps/v1/deployments", "kube-system", name)
                containers = deployment["spec"]["template"]["spec"]["containers"]
                for item in containers:
                    if item["name"] in ("cilium-operator", "apiserver", "kvstoremesh"):
                        item["image"] = images[container]
                self.member.change(
                    "apps/v1/deployments",
                    "kube-system",
                    name,
                    {
                        "spec": {"template": {"spec": {"containers": containers}}},
                        "status": {"updatedReplicas": 0},
                    },
                )
            return
        desired = agent["status"]["desiredNumberScheduled"]
        if agent["status"]["updatedNumberScheduled"] < desired:  # the kubelet restarts a pod
            self.member.change(
                "apps/v1/daemonsets",
                "kube-system",
                "cilium",
                {
                    "status": {
                        "updatedNumberScheduled": agent["status"]["updatedNumberScheduled"] + 1
                    }
                },
            )
            return
        for name in ("cilium-operator", "clustermesh-apiserver"):
            deployment = self.member.obj("apps/v1/deployments", "kube-system", name)
            if deployment["status"]["updatedReplicas"] < deployment["spec"]["replicas"]:
                self.member.change(
                    "apps/v1/deployments",
                    "kube-system",
                    name,
                    {"status": {"updatedReplicas": deployment["status"]["updatedReplicas"] + 1}},
                )
                return
