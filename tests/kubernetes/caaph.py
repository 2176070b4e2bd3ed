"""A fleet whose Cilium is installed by Cluster API's Helm add-on provider (CAAPH).

Four members, none meshed yet, each reached through Cluster API and each with its
own ``HelmChartProxy`` whose ``valuesTemplate`` carries the user's own values.
:class:`HelmAddonProvider` plays CAAPH and the chart: it renders each proxy's
values onto its member (``cilium-config`` name and id, the clustermesh-apiserver
Deployment and LoadBalancer Service, Secret ``cilium-clustermesh`` with one
connection entry per configured peer and the shared-CA client key).
:class:`MeshAgents` answers ``cilium-dbg`` the way the agents would from that
rendered state: a member's agents see a peer ready once the member's Secret
lists it and the peer's clustermesh-apiserver runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kmock
import pytest_asyncio
import yaml

from activities.backends.kubernetes import ExecTarget, KubernetesBackend, load_access
from activities.backends.kubernetes._api import ClusterApi
from activities.backends.kubernetes._exec import SERVICE_LIST_COMMAND
from tests.kubernetes.agents import agent_status, remote_cluster, service_table
from tests.kubernetes.emulated_fleet import kubeconfig
from tests.kubernetes.emulator import RESOURCES, ClusterEmulator
from tests.kubernetes.seeds import b64, cilium_images, seed_service

NAMESPACE = "fleet"
CAAPH_MEMBERS = ("alpha-1", "bravo-2", "charlie-3", "delta-4")
#: Pod CIDR second octet and LoadBalancer address per member.
OCTET = {"alpha-1": 11, "bravo-2": 12, "charlie-3": 13, "delta-4": 14}
PROXIES = "addons.cluster.x-k8s.io/v1alpha1/helmchartproxies"
CONFIGMAPS = "v1/configmaps"
SECRETS = "v1/secrets"
SERVICES = "v1/services"
DEPLOYMENTS = "apps/v1/deployments"

#: The user's values: meshfleet may touch only the mesh keys, nothing else, byte for byte.
USER_VALUES = """\
# Cilium for {{ .Cluster.metadata.name }} (platform team; do not reorder)
cluster:
  name: {{ .Cluster.metadata.name }}   # the Cluster API name
ipam:
  mode: kubernetes
routingMode: native
clustermesh:
  apiserver:
    service:
      type: LoadBalancer
    tls:
      authMode: cluster
hubble:
  enabled: true
  relay: {enabled: true}
"""


def proxy_name(member: str) -> str:
    return f"cilium-{member}"


def address(member: str) -> str:
    return f"192.0.2.{OCTET[member]}"


def seed_caaph_member(emu: ClusterEmulator, name: str) -> None:
    """A member with Cilium installed by its HelmChartProxy, not meshed."""
    for resource in RESOURCES[:8]:
        emu.resources[resource] = kmock.ResourceInfo()
    emu.git_version = "v1.33.2"
    images = cilium_images("1.17.9")
    for ns, ns_annotations in (
        ("kube-system", {}),
        ("shop", {"clustermesh.cilium.io/global": "true"}),
    ):
        emu.objects["v1/namespaces", None, ns] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "annotations": ns_annotations},
        }
    for index in range(2):
        node = f"{name}-node-{index}"
        emu.objects["v1/nodes", None, node] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": node},
            "spec": {"podCIDRs": [f"10.{OCTET[name]}.{index}.0/24"]},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": f"172.16.{OCTET[name]}.{index}"}],
            },
        }
        emu.objects["v1/pods", "kube-system", f"cilium-{name}-{index}"] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"cilium-{name}-{index}",
                "namespace": "kube-system",
                "labels": {"k8s-app": "cilium"},
            },
            "spec": {"nodeName": node, "containers": [{"name": "cilium-agent"}]},
            "status": {"phase": "Running"},
        }
    emu.objects[CONFIGMAPS, "kube-system", "cilium-config"] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "cilium-config",
            "namespace": "kube-system",
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
        },
        "data": {
            "cluster-name": name,
            "cluster-id": "0",
            "routing-mode": "native",
            "ipam": "kubernetes",
            "clustermesh-default-global-namespace": "false",
        },
    }
    emu.objects["apps/v1/daemonsets", "kube-system", "cilium"] = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "cilium", "namespace": "kube-system", "generation": 1},
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "cilium-agent", "image": images["agent"]}]}
            }
        },
        "status": {
            "desiredNumberScheduled": 2,
            "updatedNumberScheduled": 2,
            "numberReady": 2,
            "numberAvailable": 2,
            "observedGeneration": 1,
        },
    }
    seed_service(emu, f"10.{OCTET[name]}", "shop", "cart", ready=2, not_ready=0, shared=None)


def seed_caaph_management(emu: ClusterEmulator, kubeconfigs: dict[str, str]) -> None:
    """A Cluster, its kubeconfig Secret and its own Cilium HelmChartProxy per member."""
    for resource in RESOURCES:
        emu.resources[resource] = kmock.ResourceInfo()
    for name, config in kubeconfigs.items():
        labels = {"meshfleet.io/fleet": "caaph", "cluster.x-k8s.io/cluster-name": name}
        emu.objects["cluster.x-k8s.io/v1beta1/clusters", NAMESPACE, name] = {
            "apiVersion": "cluster.x-k8s.io/v1beta1",
            "kind": "Cluster",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
            "spec": {"topology": {"class": "quick-start", "version": "v1.33.2"}},
            "status": {"phase": "Provisioned"},
        }
        emu.objects[SECRETS, NAMESPACE, f"{name}-kubeconfig"] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-kubeconfig", "namespace": NAMESPACE},
            "data": {"value": b64(config)},
        }
        emu.objects[PROXIES, NAMESPACE, proxy_name(name)] = {
            "apiVersion": "addons.cluster.x-k8s.io/v1alpha1",
            "kind": "HelmChartProxy",
            "metadata": {"name": proxy_name(name), "namespace": NAMESPACE},
            "spec": {
                "clusterSelector": {"matchLabels": {"cluster.x-k8s.io/cluster-name": name}},
                "repoURL": "https://helm.cilium.io/",
                "chartName": "cilium",
                "releaseName": "cilium",
                "namespace": "kube-system",
                "version": "1.17.9",
                "valuesTemplate": USER_VALUES,
            },
        }


def rendered(values_template: str, cluster: str) -> dict[str, Any]:
    """What CAAPH hands Helm: the template executed for ``cluster``, parsed."""
    text = re.sub(r"\{\{\s*\.Cluster\.metadata\.name\s*\}\}", cluster, values_template)
    values = yaml.safe_load(text) or {}
    assert isinstance(values, dict)
    return values


@dataclass
class HelmAddonProvider:
    """CAAPH plus the Cilium chart: renders each HelmChartProxy's values onto its member."""

    management: ClusterEmulator
    members: dict[str, ClusterEmulator]
    key_material: str
    tick: float = 0.02
    #: Members whose chart render is held back (a slow helm upgrade).
    paused: set[str] = field(default_factory=set)

    async def run(self) -> None:
        while True:
            for name in self.members:
                if name not in self.paused:
                    self.render(name)
            await asyncio.sleep(self.tick)

    def render(self, name: str) -> None:
        proxy = self.management.obj(PROXIES, NAMESPACE, proxy_name(name))
        values = rendered(proxy["spec"]["valuesTemplate"], name)
        emu = self.members[name]
        cluster = values.get("cluster") or {}
        mesh = values.get("clustermesh") or {}
        data = emu.obj(CONFIGMAPS, "kube-system", "cilium-config")["data"]
        wanted = {"cluster-name": str(cluster.get("name") or "default")}
        wanted["cluster-id"] = str(cluster.get("id") or 0)
        if any(data.get(k) != v for k, v in wanted.items()):
            emu.change(CONFIGMAPS, "kube-system", "cilium-config", {"data": wanted})
        self._apiserver(emu, name, bool(mesh.get("useAPIServer")))
        peers = (mesh.get("config") or {}).get("clusters") or []
        enabled = bool((mesh.get("config") or {}).get("enabled"))
        self._connections(emu, [p for p in peers if enabled and p.get("name") != name])

    def _apiserver(self, emu: ClusterEmulator, name: str, wanted: bool) -> None:
        present = emu.has(DEPLOYMENTS, "kube-system", "clustermesh-apiserver")
        if wanted and not present:
            image = cilium_images("1.17.9")["apiserver"]
            emu.objects[DEPLOYMENTS, "kube-system", "clustermesh-apiserver"] = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": "clustermesh-apiserver",
                    "namespace": "kube-system",
                    "generation": 1,
                },
                "spec": {
                    "replicas": 1,
                    "template": {"spec": {"containers": [{"name": "apiserver", "image": image}]}},
                },
                "status": {
                    "replicas": 1,
                    "updatedReplicas": 1,
                    "readyReplicas": 1,
                    "availableReplicas": 1,
                    "observedGeneration": 1,
                },
            }
            emu.objects[SERVICES, "kube-system", "clustermesh-apiserver"] = {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "clustermesh-apiserver", "namespace": "kube-system"},
                "spec": {"type": "LoadBalancer", "ports": [{"port": 2379, "nodePort": 32379}]},
                "status": {"loadBalancer": {"ingress": [{"ip": address(name)}]}},
            }
        elif not wanted and present:
            del emu.objects[DEPLOYMENTS, "kube-system", "clustermesh-apiserver"]
            del emu.objects[SERVICES, "kube-system", "clustermesh-apiserver"]

    def _connections(self, emu: ClusterEmulator, peers: list[dict[str, Any]]) -> None:
        data: dict[str, str] = {}
        for peer in peers:
            host = peer.get("address") or f"{peer['name']}.mesh.cilium.io"
            data[str(peer["name"])] = b64(
                f"endpoints:\n- https://{host}:{peer['port']}\n"
                "trusted-ca-file: /var/lib/cilium/clustermesh/common-etcd-client-ca.crt\n"
                "key-file: /var/lib/cilium/clustermesh/common-etcd-client.key\n"
                "cert-file: /var/lib/cilium/clustermesh/common-etcd-client.crt\n"
            )
        if peers:
            begin, end = "-----BEGIN EC PRIVATE KEY-----", "-----END EC PRIVATE KEY-----"
            pem = f"{begin}\n{self.key_material}\n{end}\n"
            data["common-etcd-client.key"] = b64(pem)
        key = (SECRETS, "kube-system", "cilium-clustermesh")
        if not emu.has(*key):
            emu.objects[key] = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "cilium-clustermesh", "namespace": "kube-system"},
                "data": data,
            }
        elif emu.obj(*key).get("data") != data:
            emu.objects[key] = {**emu.obj(*key), "data": data}


@dataclass
class MeshAgents:
    """``cilium-dbg status -o json`` as each member's agents would answer from rendered state."""

    members: dict[str, ClusterEmulator]
    calls: list[ExecTarget] = field(default_factory=list)

    def _listed(self, name: str) -> list[str]:
        key = (SECRETS, "kube-system", "cilium-clustermesh")
        if not self.members[name].has(*key):
            return []
        data = self.members[name].obj(*key).get("data") or {}
        return sorted(k for k in data if k in self.members)

    def _cluster_id(self, name: str) -> int:
        data = self.members[name].obj(CONFIGMAPS, "kube-system", "cilium-config")["data"]
        return int(data.get("cluster-id") or 0)

    def status(self, name: str) -> str:
        peers = []
        for peer in self._listed(name):
            if self.members[peer].has(DEPLOYMENTS, "kube-system", "clustermesh-apiserver"):
                peers.append(remote_cluster(peer, self._cluster_id(peer)))
        return agent_status(peers)

    async def __call__(self, api: ClusterApi, target: ExecTarget) -> str:
        self.calls.append(target)
        if target.command == SERVICE_LIST_COMMAND:
            return service_table(target.cluster, self.members)
        assert target.command == ("cilium-dbg", "status", "-o", "json")
        return self.status(target.cluster)


@dataclass
class CaaphFleet:
    """Four CAAPH-managed members, their management cluster, CAAPH and the agents."""

    members: dict[str, ClusterEmulator]
    management: ClusterEmulator
    access_file: Path
    helm: HelmAddonProvider
    agents: MeshAgents
    #: Strings that must never appear in a history, an error or a log line.
    secrets: list[str]

    def backend(self) -> KubernetesBackend:
        """A fresh backend, as a (re)started worker would build it."""
        return KubernetesBackend(load_access(self.access_file), pod_exec=self.agents)

    def values(self, member: str) -> str:
        """The current ``valuesTemplate`` of ``member``'s HelmChartProxy."""
        text = self.management.obj(PROXIES, NAMESPACE, proxy_name(member))["spec"]["valuesTemplate"]
        return str(text)

    def mesh_values(self, member: str) -> dict[str, Any]:
        """The rendered values' mesh part: name, id, and the peers' entries."""
        values = rendered(self.values(member), member)
        mesh = values.get("clustermesh") or {}
        return {
            "cluster": values.get("cluster"),
            "useAPIServer": mesh.get("useAPIServer"),
            "enabled": (mesh.get("config") or {}).get("enabled"),
            "peers": [p["name"] for p in (mesh.get("config") or {}).get("clusters") or []],
            "entries": (mesh.get("config") or {}).get("clusters") or [],
        }


@pytest_asyncio.fixture(loop_scope="session")
async def caaph_fleet(tmp_path: Path) -> AsyncIterator[CaaphFleet]:
    """A fresh CAAPH fleet per test, CAAPH running; everything stopped afterwards."""
    async with contextlib.AsyncExitStack() as stack:
        emulators: dict[str, ClusterEmulator] = {}
        urls: dict[str, str] = {}
        for name in (*CAAPH_MEMBERS, "management"):
            emu = await stack.enter_async_context(ClusterEmulator())
            server = await stack.enter_async_context(kmock.Server(emu))
            emulators[name] = emu
            urls[name] = str(server.url).rstrip("/")
        tokens = {n: f"tok-{n}-{secrets.token_hex(12)}" for n in urls}
        key_material = f"MHcCAQEEI{secrets.token_hex(16)}"
        for name in CAAPH_MEMBERS:
            seed_caaph_member(emulators[name], name)
        seed_caaph_management(
            emulators["management"],
            {n: yaml.safe_dump(kubeconfig({n: urls[n]}, tokens)) for n in CAAPH_MEMBERS},
        )
        config_path = tmp_path / "kubeconfig"
        config_path.write_text(
            yaml.safe_dump(kubeconfig({"management": urls["management"]}, tokens))
        )
        access_file = tmp_path / "access.yaml"
        access_file.write_text(
            yaml.safe_dump(
                {
                    "kubeconfig": "kubeconfig",
                    "requestTimeout": "5s",
                    "ciliumUpgradeTimeout": "20s",
                    "discover": [
                        {
                            "managementContext": "management",
                            "namespace": NAMESPACE,
                            "labelSelector": "meshfleet.io/fleet=caaph",
                            "cilium": "helmChartProxy",
                        }
                    ],
                }
            )
        )
        members = {n: emulators[n] for n in CAAPH_MEMBERS}
        helm = HelmAddonProvider(emulators["management"], members, key_material)
        task = asyncio.create_task(helm.run())
        try:
            yield CaaphFleet(
                members=members,
                management=emulators["management"],
                access_file=access_file,
                helm=helm,
                agents=MeshAgents(members),
                secrets=[*tokens.values(), key_material, b64(key_material)],
            )
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
