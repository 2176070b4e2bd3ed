"""An emulated fleet for the Kubernetes backend: kmock API servers on loopback, real client.

Each member cluster and the Cluster API management cluster is a
``kmock.KubernetesEmulator`` served on its own loopback port and seeded with
realistic objects. The backend reaches them through a real kubeconfig file
(with bearer tokens, so tests can check no token leaks) and, for the Cluster
API member, through the ``<cluster>-kubeconfig`` Secret on the management
cluster. The exec API is the one seam: :class:`FakeAgents` answers
``cilium-dbg status -o json`` with real-shaped output. :class:`Controllers`
moves emulated status the way Cluster API, the Helm add-on provider and the
kubelet would.

kmock 0.8 limitations worked around here (and only here): it ignores
``labelSelector`` on lists (:class:`ClusterEmulator` filters); its
``/version`` is fixed (``ClusterEmulator.git_version`` replaces it); and it
parses ``/api/v1/namespaces`` and ``/api/v1/namespaces/{name}`` as a namespace
prefix, not as the Namespace resource (a 500 on list, a 404 on get and patch;
:func:`_namespaces_are_a_resource` corrects the parse).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import itertools
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp.web
import attrs
import kmock
import pytest
import pytest_asyncio
import yaml
from kmock._internal import parsing
from kmock._internal.k8s import KubernetesObjectConflictError

from activities.backends.kubernetes import ExecTarget, KubernetesBackend, load_access
from activities.backends.kubernetes._api import ClusterApi
from activities.backends.kubernetes._exec import SERVICE_LIST_COMMAND

SAMPLES = Path(__file__).parent / "samples"
MEMBERS = ("ap-south-1", "us-east-1", "eu-north-1")
CAPI_MEMBER = "eu-north-1"
OFFLINE = "offline-1"
FLEET_NAMESPACE = "fleet"

RESOURCES = (
    "v1/namespaces",
    "v1/nodes",
    "v1/pods",
    "v1/services",
    "v1/secrets",
    "v1/configmaps",
    "apps/v1/daemonsets",
    "apps/v1/deployments",
    "discovery.k8s.io/v1/endpointslices",
    "cluster.x-k8s.io/v1beta1/clusters",
    "controlplane.cluster.x-k8s.io/v1beta1/kubeadmcontrolplanes",
    "addons.cluster.x-k8s.io/v1alpha1/helmchartproxies",
)


_KEPT_REQUESTS = 64
#: What an API server offers for exec, newest first (1.30+ speaks v5).
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")


@dataclass(frozen=True)
class ExecReply:
    """What a command run in a pod gives back: its streams and exit code, or it hangs."""

    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    hang: bool = False


#: Answers an exec: ``(pod, container, command) -> reply``.
ExecHandler = Callable[[str, str, tuple[str, ...]], Awaitable[ExecReply]]


@attrs.define(kw_only=True)
class ClusterEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with a settable ``/version``, label-selector filtering on lists,
    and ``resourceVersion`` as the API server keeps it: every change moves it on, and a
    patch that names an older one is refused with 409 Conflict."""

    git_version: str = "v1.33.2"
    _versions: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _writes: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    #: Patches refused for a stale resourceVersion (for assertions).
    conflicts: int = attrs.field(default=0, init=False)
    _holds: dict[tuple[str, str | None, str], asyncio.Barrier] = attrs.field(
        factory=dict, init=False
    )

    def hold_patches(self, resource: str, namespace: str | None, name: str, parties: int) -> None:
        """Make the next ``parties`` patches of one object wait for each other before any
        applies: writers that read the same version before patching race for certain."""
        self._holds[resource, namespace, name] = asyncio.Barrier(parties)

    def _stamp(self) -> None:
        """Give every object without one a resourceVersion (seeds are written directly)."""
        for key in list(self.objects):
            obj = self.objects[key]
            if not obj.deleted and not (obj.get("metadata") or {}).get("resourceVersion"):
                obj.patch({"metadata": {"resourceVersion": str(next(self._versions))}})

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        # kmock matches each request against every request it kept (quadratic for a
        # polling client): keep only the recent ones, which is all these tests look at.
        del self._requests[:-_KEPT_REQUESTS]
        if request.resource is None or request.action != kmock.action.UPDATE or not request.name:
            self._stamp()
            return await super()._handle(request)
        hold = next(
            (
                k
                for k in self._holds
                if request.resource == k[0] and (request.namespace, request.name) == k[1:]
            ),
            None,
        )
        if hold is not None:
            barrier = self._holds[hold]
            if barrier.n_waiting + 1 == barrier.parties:
                del self._holds[hold]  # the last party: later patches pass freely
            await barrier.wait()
        async with self._writes:  # check, patch and answer as one step, like etcd's CAS
            self._stamp()
            key = (request.resource, request.namespace, request.name)
            data = request.data if isinstance(request.data, dict) else {}
            wanted = (data.get("metadata") or {}).get("resourceVersion")
            if key in self.objects and not self.objects[key].deleted:
                current = (self.objects[key].get("metadata") or {}).get("resourceVersion")
                if wanted is not None and str(wanted) != str(current):
                    self.conflicts += 1
                    return await self._render_error(KubernetesObjectConflictError())
            data.setdefault("metadata", {})["resourceVersion"] = str(next(self._versions))
            return await super()._handle(request)

    async def _serve_server_version(self, request: kmock.Request) -> dict[str, str]:
        major, minor = self.git_version.lstrip("v").split(".")[:2]
        return {"major": major, "minor": minor, "gitVersion": self.git_version}

    async def _serve_list(self, request: kmock.Request) -> Any:
        payload = cast(dict[str, Any], await super()._serve_list(request))
        selector = request.params.get("labelSelector")
        if selector:
            payload["items"] = [i for i in payload["items"] if _selected(selector, i)]
        return payload

    #: Serves ``pods/{name}/exec`` over websockets when set (the Kubernetes exec protocol).
    exec_handler: ExecHandler | None = attrs.field(default=None, init=False)
    exec_protocols: tuple[str, ...] = attrs.field(default=EXEC_PROTOCOLS, init=False)
    #: The subprotocol each exec negotiated, in order (for assertions).
    exec_sessions: list[str] = attrs.field(factory=list, init=False)

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        upgrade = raw_request.headers.get("Upgrade", "").lower() == "websocket"
        if upgrade and raw_request.path.endswith("/exec") and self.exec_handler is not None:
            return await self._serve_exec(raw_request, self.exec_handler)
        return await super().__call__(raw_request)

    async def _serve_exec(
        self, raw_request: aiohttp.web.BaseRequest, handler: ExecHandler
    ) -> aiohttp.web.StreamResponse:
        """The exec protocol as the API server speaks it to ``kubernetes.stream``.

        Binary frames prefixed by a channel byte: 1 stdout, 2 stderr, 3 the error
        channel carrying the final ``Status`` (``Success``, or ``Failure`` with
        reason ``NonZeroExitCode`` and the code in ``details.causes``); with
        ``v5.channel.k8s.io`` a close frame (channel 255) per stream before the end.
        """
        ws = aiohttp.web.WebSocketResponse(protocols=self.exec_protocols)
        await ws.prepare(raw_request)
        protocol = ws.ws_protocol or ""
        self.exec_sessions.append(protocol)
        pod = raw_request.path.rstrip("/").split("/")[-2]
        container = raw_request.query.get("container", "")
        command = tuple(raw_request.query.getall("command", []))
        reply = await handler(pod, container, command)
        if reply.hang:
            await ws.receive()  # until the client gives up and closes
            return ws
        if reply.stdout:
            await ws.send_bytes(b"\x01" + reply.stdout.encode())
        if reply.stderr:
            await ws.send_bytes(b"\x02" + reply.stderr.encode())
        status: dict[str, Any] = {"metadata": {}, "status": "Success"}
        if reply.exit_code:
            status = {
                "metadata": {},
                "status": "Failure",
                "message": f"command terminated with non-zero exit code {reply.exit_code}",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": str(reply.exit_code)}]},
            }
        await ws.send_bytes(b"\x03" + json.dumps(status).encode())
        if protocol == "v5.channel.k8s.io":
            for channel in (1, 2, 3):
                await ws.send_bytes(bytes([255, channel]))
        await ws.close()
        return ws

    def has(self, resource: str, namespace: str | None, name: str) -> bool:
        """Whether the object exists (kmock's ``in`` needs a parsed resource, not a string)."""
        wanted: tuple[Any, ...] = (resource, namespace, name)
        return wanted in list(self.objects)

    def obj(self, resource: str, namespace: str | None, name: str) -> dict[str, Any]:
        """The current state of an object (a deep copy)."""
        return copy.deepcopy(self.objects[resource, namespace, name].raw)

    def change(self, resource: str, namespace: str | None, name: str, body: dict[str, Any]) -> None:
        """Change an object as a controller would (merge; None removes; a new resourceVersion)."""
        self.objects[resource, namespace, name].patch(body)
        version = {"metadata": {"resourceVersion": str(next(self._versions))}}
        self.objects[resource, namespace, name].patch(version)


def _selected(selector: str, item: dict[str, Any]) -> bool:
    labels = (item.get("metadata") or {}).get("labels") or {}
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if (value and labels.get(key) != value) or (not value and key not in labels):
            return False
    return True


_parse_path = parsing.parse_path


def _parse_namespaces(path: str) -> parsing.ParsedPath:
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) in (3, 4):
        name = parts[3] if len(parts) == 4 else None
        return parsing.ParsedPath(group="", version="v1", plural="namespaces", name=name)
    return _parse_path(path)


@pytest.fixture(autouse=True)
def _namespaces_are_a_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    """``/api/v1/namespaces[/{name}]`` is the Namespace resource (kmock 0.8 misparses it)."""
    monkeypatch.setattr(parsing, "parse_path", _parse_namespaces)


# --- seeding realistic objects ----------------------------------------------------------------


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class MemberSpec:
    name: str
    cluster_id: int
    cidr: str
    kubernetes: str = "1.33.2"
    cilium: str = "1.17.9"
    peers: tuple[str, ...] = ()
    nodes: int = 2


def cilium_images(version: str) -> dict[str, str]:
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


# --- the fake exec: cilium-dbg status -o json ------------------------------------------------


def remote_cluster(name: str, cluster_id: int, *, failures: int = 0) -> dict[str, Any]:
    """A fully ready RemoteCluster, shaped like the healthy sample."""
    return {
        "name": name,
        "ready": True,
        "connected": True,
        "status": f"etcd: 1/1 connected, leases=0, lock leases=0, has-quorum=true: "
        f"https://{name}.mesh.cilium.io:2379 - 3.5.21 (Leader), ID: 19fe0b22c7a3d511",
        "num-nodes": 2,
        "num-endpoints": 40,
        "num-identities": 57,
        "num-shared-services": 3,
        "num-failures": failures,
        "config": {
            "cluster-id": cluster_id,
            "kvstoremesh": True,
            "required": True,
            "retrieved": True,
            "sync-canaries": True,
        },
        "synced": {"nodes": True, "endpoints": True, "identities": True, "services": True},
    }


def agent_status(clusters: list[dict[str, Any]] | None) -> str:
    """A whole ``cilium-dbg status -o json`` document (omitting ``cluster-mesh`` if None)."""
    document: dict[str, Any] = {
        "kvstore": {"state": "Disabled"},
        "kubernetes": {"state": "Ok", "msg": "1.33 (v1.33.2) [linux/amd64]"},
        "cilium": {"state": "Ok", "msg": "Ok"},
        "stale": {},
    }
    if clusters is not None:
        document["cluster-mesh"] = {"clusters": clusters}
    return json.dumps(document, indent=2)


IDS = {"ap-south-1": 3, "us-east-1": 9, "eu-north-1": 4}


def _ready_ipv4(emu: ClusterEmulator, namespace: str, name: str) -> list[str]:
    found: list[str] = []
    for key in list(emu.objects):
        obj = emu.objects[key]
        if key[0] != "discovery.k8s.io/v1/endpointslices" or key[1] != namespace or obj.deleted:
            continue
        raw = obj.raw
        if raw.get("addressType") != "IPv4":
            continue
        if (raw.get("metadata") or {}).get("labels", {}).get("kubernetes.io/service-name") != name:
            continue
        for endpoint in raw.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is not False:
                found.extend(endpoint.get("addresses") or [])
    return found


def _global_copy(emu: ClusterEmulator, namespace: str, name: str) -> dict[str, str] | None:
    """The Service's annotations when it is global there (both annotations), else None."""
    if not emu.has("v1/services", namespace, name) or not emu.has("v1/namespaces", None, namespace):
        return None
    ns = emu.obj("v1/namespaces", None, namespace)["metadata"].get("annotations") or {}
    annotations = emu.obj("v1/services", namespace, name)["metadata"].get("annotations") or {}
    if ns.get("clustermesh.cilium.io/global") != "true":
        return None
    if annotations.get("service.cilium.io/global") != "true":
        return None
    return dict(annotations)


def service_table(viewer: str, emulators: dict[str, ClusterEmulator]) -> str:
    """``cilium-dbg service list -o json`` as Cilium programs it from the declared state.

    The viewer's own ready endpoints, plus each peer's where both copies are
    global and the peer shares (``service.cilium.io/shared`` not ``"false"``).
    In the shape of ``samples/cilium-dbg-service-list.json`` (Cilium's ``Service``
    model: ``spec`` and the same ``status.realized``; see ``samples/README.md``).
    """
    entries: list[dict[str, Any]] = []
    own = emulators[viewer]
    for key in list(own.objects):
        if key[0] != "v1/services" or own.objects[key].deleted:
            continue
        namespace, name = str(key[1]), str(key[2])
        backends = _ready_ipv4(own, namespace, name)
        if _global_copy(own, namespace, name) is not None:
            for peer, emu in emulators.items():
                copy = _global_copy(emu, namespace, name) if peer != viewer else None
                if copy is not None and copy.get("service.cilium.io/shared", "true") != "false":
                    backends.extend(_ready_ipv4(emu, namespace, name))
        # As the agent builds it (GetModel): one spec, serialized as spec and status.realized.
        spec = {
            "backend-addresses": [
                {
                    "ip": ip,
                    "port": 8080,
                    "preferred": True,
                    "protocol": "TCP",
                    "state": "active",
                    "weight": 100,
                }
                for ip in backends
            ],
            "flags": {
                "extTrafficPolicy": "Cluster",
                "intTrafficPolicy": "Cluster",
                "name": name,
                "namespace": namespace,
                "trafficPolicy": "Cluster",
                "type": "ClusterIP",
            },
            "frontend-address": {
                "ip": f"10.96.0.{len(entries) + 10}",
                "port": 80,
                "protocol": "TCP",
                "scope": "external",
            },
            "id": len(entries) + 1,
        }
        entries.append({"spec": spec, "status": {"realized": spec}})
    return json.dumps(entries)


@dataclass
class FakeAgents:
    """Answers ``cilium-dbg status -o json`` per member (or per pod), like the agents would,
    and ``cilium-dbg service list -o json`` from the emulated clusters' declared state
    (:func:`service_table`), unless a pod's table is frozen for a number of polls."""

    outputs: dict[str, str] = field(default_factory=dict)
    calls: list[ExecTarget] = field(default_factory=list)
    emulators: dict[str, ClusterEmulator] = field(default_factory=dict)
    #: pod -> (the table it keeps answering, for how many more polls).
    frozen: dict[str, tuple[str, int]] = field(default_factory=dict)

    def freeze(self, cluster: str, polls: int) -> None:
        """Every agent of ``cluster`` keeps its current table for ``polls`` more polls."""
        table = service_table(cluster, self.emulators)
        for key in list(self.emulators[cluster].objects):
            if key[0] == "v1/pods" and str(key[2]).startswith("cilium-"):
                self.frozen[str(key[2])] = (table, polls)

    def table(self, target: ExecTarget) -> str:
        held = self.frozen.get(target.pod)
        if held is not None and held[1] > 0:
            self.frozen[target.pod] = (held[0], held[1] - 1)
            return held[0]
        return service_table(target.cluster, self.emulators)

    def healthy(self, members: tuple[str, ...] = MEMBERS) -> None:
        for member in members:
            peers = [remote_cluster(p, IDS[p]) for p in members if p != member]
            self.outputs[member] = agent_status(peers)

    async def __call__(self, api: ClusterApi, target: ExecTarget) -> str:
        self.calls.append(target)
        assert target.container == "cilium-agent"
        if target.command == SERVICE_LIST_COMMAND:
            return self.table(target)
        assert target.command == ("cilium-dbg", "status", "-o", "json")
        assert target.container == "cilium-agent"
        output = self.outputs.get(target.pod, self.outputs.get(target.cluster))
        if output is None:
            raise RuntimeError("container not found")
        return output


# --- controllers: Cluster API, the Helm add-on provider, the kubelet ---------------------------


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


# --- the fleet fixture --------------------------------------------------------------------------


@dataclass
class Fleet:
    """Three members (one through Cluster API), a management cluster, and their secrets."""

    members: dict[str, ClusterEmulator]
    management: ClusterEmulator
    access_file: Path
    kubeconfig: Path
    agents: FakeAgents
    #: Strings that must never appear in an error or a log line.
    secrets: list[str]
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def backend(self) -> KubernetesBackend:
        """A fresh backend, as a (re)started worker would build it."""
        return KubernetesBackend(load_access(self.access_file), pod_exec=self.agents)

    def write_access(self, extra: dict[str, Any]) -> None:
        access = yaml.safe_load(self.access_file.read_text())
        access.update(extra)
        self.access_file.write_text(yaml.safe_dump(access))

    def start_controllers(self, **options: Any) -> Controllers:
        controllers = Controllers(self.management, self.members[CAPI_MEMBER], **options)
        self._tasks.append(asyncio.create_task(controllers.run()))
        return controllers


def kubeconfig(servers: dict[str, str], tokens: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": {"server": url}} for n, url in servers.items()],
        "users": [{"name": f"{n}-admin", "user": {"token": tokens[n]}} for n in servers],
        "contexts": [{"name": n, "context": {"cluster": n, "user": f"{n}-admin"}} for n in servers],
        "current-context": next(iter(servers)),
    }


@pytest_asyncio.fixture(loop_scope="session")
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    """A fresh emulated fleet per test; every server and controller stopped afterwards."""
    async with contextlib.AsyncExitStack() as stack:
        emulators: dict[str, ClusterEmulator] = {}
        urls: dict[str, str] = {}
        for name in (*MEMBERS, "management"):
            emu = await stack.enter_async_context(ClusterEmulator())
            server = await stack.enter_async_context(kmock.Server(emu))
            emulators[name] = emu
            urls[name] = str(server.url).rstrip("/")
        tokens = {n: f"tok-{n}-{secrets.token_hex(12)}" for n in (*urls, OFFLINE)}
        key_material = f"MHcCAQEEI{secrets.token_hex(16)}"
        capi_kubeconfig = kubeconfig({CAPI_MEMBER: urls[CAPI_MEMBER]}, tokens)
        for spec in (
            MemberSpec("ap-south-1", 3, "10.3.0.0/16", peers=("eu-north-1", "us-east-1")),
            MemberSpec("us-east-1", 9, "10.9.0.0/16", peers=("ap-south-1", "eu-north-1")),
            MemberSpec(
                "eu-north-1",
                4,
                "10.4.0.0/16",
                kubernetes="1.32.6",
                peers=("ap-south-1", "us-east-1"),
            ),
        ):
            seed_member(emulators[spec.name], spec, key_material)
        seed_management(emulators["management"], yaml.safe_dump(capi_kubeconfig))
        direct = {n: urls[n] for n in ("ap-south-1", "us-east-1", "management")}
        direct[OFFLINE] = "http://127.0.0.1:9"  # discard port: nothing listens
        config_path = tmp_path / "kubeconfig"
        config_path.write_text(yaml.safe_dump(kubeconfig(direct, tokens)))
        access_file = tmp_path / "access.yaml"
        access_file.write_text(
            yaml.safe_dump(
                {
                    "kubeconfig": "kubeconfig",
                    "requestTimeout": "5s",
                    "members": [
                        {"name": "ap-south-1", "context": "ap-south-1", "updateGroup": "canary"},
                        {"name": "us-east-1", "context": "us-east-1", "labels": {"env": "prod"}},
                        {"name": OFFLINE, "context": OFFLINE},
                    ],
                    "discover": [
                        {
                            "managementContext": "management",
                            "namespace": FLEET_NAMESPACE,
                            "labelSelector": "meshfleet.io/fleet=test",
                        }
                    ],
                }
            )
        )
        agents = FakeAgents(emulators={n: emulators[n] for n in MEMBERS})
        agents.healthy()
        fleet = Fleet(
            members={n: emulators[n] for n in MEMBERS},
            management=emulators["management"],
            access_file=access_file,
            kubeconfig=config_path,
            agents=agents,
            secrets=[*tokens.values(), key_material, b64(key_material)],
        )
        try:
            yield fleet
        finally:
            for task in fleet._tasks:
                task.cancel()
            for task in fleet._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def sample(name: str) -> str:
    return (SAMPLES / f"cilium-dbg-status.cluster-mesh.{name}.json").read_text()


def walk_strings(value: Any) -> Iterator[str]:
    """Every string inside a nested structure (for secret scans)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from walk_strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from walk_strings(item)
    else:
        yield repr(value)
