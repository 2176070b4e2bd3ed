"""Realistic objects for the emulated clusters: members as a Helm-installed Cilium with
ClusterMesh leaves them, global services, and the Cluster API management cluster."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import kmock

from tests.kubernetes.emulator import RESOURCES, ClusterEmulator

MEMBERS = ("ap-south-1", "us-east-1", "eu-north-1")


CAPI_MEMBER = "eu-north-1"


OFFLINE = "offline-1"


FLEET_NAMESPACE = "fleet"


IDS = {"ap-south-1": 3, "us-east-1": 9, "eu-north-1": 4}


def b64(text: str) -> str:
    """``text`` as a Secret's ``data`` holds it."""
    return base64.b64encode(text.encode()).decode()


@dataclass
class MemberSpec:
    """What a seeded member is: name, cluster id, pod CIDR, versions, peers, nodes."""

    name: str
    cluster_id: int
    cidr: str
    kubernetes: str = "1.33.2"
    cilium: str = "1.17.9"
    peers: tuple[str, ...] = ()
    nodes: int = 2


def cilium_images(version: str) -> dict[str, str]:
    """The agent, operator and clustermesh-apiserver images of a Cilium release."""
    return {
        "agent": f"quay.io/cilium/cilium:v{version}@sha256:{'a' * 64}",
        "operator": f"quay.io/cilium/operator-generic:v{version}@sha256:{'b' * 64}",
        "apiserver": f"quay.io/cilium/clustermesh-apiserver:v{version}@sha256:{'c' * 64}",
    }


def seed_member(emu: ClusterEmulator, spec: MemberSpec, key_material: str) -> None:
    """A member as a Helm-installed Cilium with ClusterMesh leaves it."""
    for resource in RESOURCES[:8]:
        emu.resources[resource] = kmock.ResourceInfo()
    emu.git_version = f"v{spec.kubernetes}"
    images = cilium_images(spec.cilium)
    for ns, ns_annotations in (
        ("kube-system", {}),
        ("default", {}),
        ("shop", {"clustermesh.cilium.io/global": "true"}),
        ("internal", {}),
    ):
        emu.objects["v1/namespaces", None, ns] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "annotations": ns_annotations},
        }
    octets = spec.cidr.split(".")
    for index in range(spec.nodes):
        node = f"{spec.name}-node-{index}"
        emu.objects["v1/nodes", None, node] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}},
            "spec": {"podCIDRs": [f"{octets[0]}.{octets[1]}.{index}.0/24"]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }
        emu.objects["v1/pods", "kube-system", f"cilium-{spec.name}-{index}"] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"cilium-{spec.name}-{index}",
                "namespace": "kube-system",
                "labels": {"k8s-app": "cilium"},
            },
            "spec": {"nodeName": node, "containers": [{"name": "cilium-agent"}]},
            "status": {"phase": "Running"},
        }
    emu.objects["v1/pods", "kube-system", "coredns-1"] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "coredns-1", "namespace": "kube-system", "labels": {"k8s-app": "dns"}},
        "status": {"phase": "Running"},
    }
    emu.objects["v1/configmaps", "kube-system", "cilium-config"] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "cilium-config",
            "namespace": "kube-system",
            "labels": {"meshfleet.io/network": "prod", "app.kubernetes.io/managed-by": "Helm"},
        },
        "data": {
            "cluster-name": spec.name,
            "cluster-id": str(spec.cluster_id),
            "max-connected-clusters": "255",
            "routing-mode": "native",
            "ipam": "kubernetes",
            "clustermesh-default-global-namespace": "false",
        },
    }
    emu.objects["apps/v1/daemonsets", "kube-system", "cilium"] = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "cilium", "namespace": "kube-system", "generation": 4},
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "cilium-agent", "image": images["agent"]}],
                    "initContainers": [{"name": "config", "image": images["agent"]}],
                }
            }
        },
        "status": {
            "desiredNumberScheduled": spec.nodes,
            "currentNumberScheduled": spec.nodes,
            "updatedNumberScheduled": spec.nodes,
            "numberReady": spec.nodes,
            "numberAvailable": spec.nodes,
            "observedGeneration": 4,
        },
    }
    for name, containers in (
        ("cilium-operator", [("cilium-operator", images["operator"])]),
        (
            "clustermesh-apiserver",
            [
                ("etcd", "quay.io/cilium/cilium-etcd:v3.5.21"),
                ("apiserver", images["apiserver"]),
                ("kvstoremesh", images["apiserver"]),
            ],
        ),
    ):
        emu.objects["apps/v1/deployments", "kube-system", name] = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": "kube-system", "generation": 2},
            "spec": {
                "replicas": 2,
                "template": {
                    "spec": {"containers": [{"name": n, "image": i} for n, i in containers]}
                },
            },
            "status": {
                "replicas": 2,
                "updatedReplicas": 2,
                "readyReplicas": 2,
                "availableReplicas": 2,
                "observedGeneration": 2,
            },
        }
    data: dict[str, str] = {}
    for peer in spec.peers:
        data[peer] = b64(
            f"endpoints:\n- https://{peer}.mesh.cilium.io:2379\n"
            f"trusted-ca-file: /var/lib/cilium/clustermesh/{peer}.etcd-client-ca.crt\n"
            f"key-file: /var/lib/cilium/clustermesh/{peer}.etcd-client.key\n"
            f"cert-file: /var/lib/cilium/clustermesh/{peer}.etcd-client.crt\n"
        )
        data[f"{peer}.etcd-client.key"] = b64(
            f"-----BEGIN EC PRIVATE KEY-----\n{key_material}\n-----END EC PRIVATE KEY-----\n"
        )
        data[f"{peer}.etcd-client-ca.crt"] = b64("-----BEGIN CERTIFICATE-----\nMIIB\n")
    emu.objects["v1/secrets", "kube-system", "cilium-clustermesh"] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "cilium-clustermesh", "namespace": "kube-system"},
        "type": "Opaque",
        "data": data,
    }
    prefix = ".".join(octets[:2])
    seed_service(emu, prefix, "shop", "cart", ready=2, not_ready=1, shared=None)
    seed_service(emu, prefix, "shop", "checkout", ready=1, not_ready=0, shared="true")
    seed_service(emu, prefix, "internal", "ledger", ready=1, not_ready=0, shared=None)


def seed_service(
    emu: ClusterEmulator,
    prefix: str,
    namespace: str,
    name: str,
    *,
    ready: int,
    not_ready: int,
    shared: str | None,
) -> None:
    """A global Service with dual-stack EndpointSlices (each pod appears in both).

    Pod IPv4 addresses are ``{prefix}.0.{10+i}``: inside the member's first node's pod CIDR.
    """
    annotations = {
        "service.cilium.io/global": "true",
        "meshfleet.io/min-ready-endpoints": "2",
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
    }
    if shared is not None:
        annotations["service.cilium.io/shared"] = shared
    emu.objects["v1/services", namespace, name] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": name}},
    }
    pods = [(f"{name}-{prefix}-{i}", i < ready) for i in range(ready + not_ready)]
    for family, suffix in (("IPv4", "v4"), ("IPv6", "v6")):
        endpoints = []
        for index, (pod, is_ready) in enumerate(pods):
            address = f"{prefix}.0.{index + 10}" if family == "IPv4" else f"fd00::{index + 10}"
            conditions: dict[str, bool] = {"serving": is_ready, "terminating": False}
            if not (is_ready and index == 0):  # omitempty: an unset `ready` means ready
                conditions["ready"] = is_ready
            endpoints.append(
                {
                    "addresses": [address],
                    "conditions": conditions,
                    "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod},
                }
            )
        emu.objects["discovery.k8s.io/v1/endpointslices", namespace, f"{name}-{suffix}"] = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-{suffix}",
                "namespace": namespace,
                "labels": {"kubernetes.io/service-name": name},
            },
            "addressType": family,
            "endpoints": endpoints,
        }


def seed_management(emu: ClusterEmulator, member_kubeconfig: str) -> None:
    """Cluster API objects for the one Cluster API member, plus a Cluster not in the fleet."""
    for resource in RESOURCES:
        emu.resources[resource] = kmock.ResourceInfo()
    for name, labels, version in (
        (CAPI_MEMBER, {"meshfleet.io/fleet": "test", "env": "prod"}, "v1.32.6"),
        ("sandbox", {"env": "dev"}, "v1.33.2"),
    ):
        labels = {**labels, "cluster.x-k8s.io/cluster-name": name}
        emu.objects["cluster.x-k8s.io/v1beta1/clusters", FLEET_NAMESPACE, name] = {
            "apiVersion": "cluster.x-k8s.io/v1beta1",
            "kind": "Cluster",
            "metadata": {"name": name, "namespace": FLEET_NAMESPACE, "labels": labels},
            "spec": {
                "topology": {"class": "quick-start", "version": version},
                "controlPlaneRef": {
                    "apiVersion": "controlplane.cluster.x-k8s.io/v1beta1",
                    "kind": "KubeadmControlPlane",
                    "name": f"{name}-control-plane",
                    "namespace": FLEET_NAMESPACE,
                },
            },
            "status": {
                "phase": "Provisioned",
                "conditions": [
                    {"type": "Ready", "status": "True"},
                    {"type": "ControlPlaneReady", "status": "True"},
                    {"type": "TopologyReconciled", "status": "True"},
                ],
            },
        }
        emu.objects[
            "controlplane.cluster.x-k8s.io/v1beta1/kubeadmcontrolplanes",
            FLEET_NAMESPACE,
            f"{name}-control-plane",
        ] = {
            "apiVersion": "controlplane.cluster.x-k8s.io/v1beta1",
            "kind": "KubeadmControlPlane",
            "metadata": {"name": f"{name}-control-plane", "namespace": FLEET_NAMESPACE},
            "spec": {"replicas": 3, "version": version},
            "status": {
                "version": version,
                "replicas": 3,
                "updatedReplicas": 3,
                "readyReplicas": 3,
                "unavailableReplicas": 0,
            },
        }
    emu.objects["v1/secrets", FLEET_NAMESPACE, f"{CAPI_MEMBER}-kubeconfig"] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": f"{CAPI_MEMBER}-kubeconfig",
            "namespace": FLEET_NAMESPACE,
            "labels": {"cluster.x-k8s.io/cluster-name": CAPI_MEMBER},
        },
        "type": "cluster.x-k8s.io/secret",
        "data": {"value": b64(member_kubeconfig)},
    }
    emu.objects[
        "addons.cluster.x-k8s.io/v1alpha1/helmchartproxies", FLEET_NAMESPACE, "cilium-eu"
    ] = {
        "apiVersion": "addons.cluster.x-k8s.io/v1alpha1",
        "kind": "HelmChartProxy",
        "metadata": {"name": "cilium-eu", "namespace": FLEET_NAMESPACE},
        "spec": {
            "clusterSelector": {"matchLabels": {"cluster.x-k8s.io/cluster-name": CAPI_MEMBER}},
            "repoURL": "https://helm.cilium.io/",
            "chartName": "cilium",
            "releaseName": "cilium",
            "namespace": "kube-system",
            "version": "1.17.9",
            "valuesTemplate": VALUES_TEMPLATE,
        },
    }


VALUES_TEMPLATE = """\
cluster:
  name: {{ .Cluster.metadata.name }}
  id: 4
routingMode: native
clustermesh:
  useAPIServer: true
  config:
    enabled: true
    clusters:
    - name: ap-south-1
      port: 2379
      ips: [192.0.2.3]
    - name: us-east-1
      port: 2379
      ips: [192.0.2.9]
"""
