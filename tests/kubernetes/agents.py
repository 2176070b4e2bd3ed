"""The fake Cilium agents: ``cilium-dbg status -o json`` and ``cilium-dbg service list -o json``
answered, through the exec seam, the way the agents would."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from activities.backends.kubernetes import ExecTarget
from activities.backends.kubernetes._api import ClusterApi
from activities.backends.kubernetes._exec import SERVICE_LIST_COMMAND
from tests.kubernetes.emulator import ClusterEmulator
from tests.kubernetes.seeds import IDS, MEMBERS

SAMPLES = Path(__file__).parent / "samples"


def sample(name: str) -> str:
    return (SAMPLES / f"cilium-dbg-status.cluster-mesh.{name}.json").read_text()


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
