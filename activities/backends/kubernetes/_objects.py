"""Reading Kubernetes, Cilium and Cluster API objects into meshfleet's terms.

Purely data-manipulative: every function takes parsed JSON objects (as the API
returns them) and returns values or domain models. No I/O here.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from activities.backends.kubernetes._values import PeerEndpoint
from engine.domain.fleet import NetworkMode
from engine.domain.mesh import (
    RemoteClusterConfig,
    RemoteClusterStatus,
    RemoteClusterSynced,
    RolloutStatus,
)

KubeObject = Mapping[str, Any]

_SEMVER_PREFIX = re.compile(r"^v?(\d+\.\d+\.\d+)")


def meta(obj: KubeObject, key: str) -> dict[str, str]:
    """``metadata.labels`` or ``metadata.annotations`` (never None)."""
    value = (obj.get("metadata") or {}).get(key) or {}
    return {str(k): str(v) for k, v in value.items()}


def kubernetes_version(version_info: KubeObject) -> str:
    """``/version`` ``gitVersion`` bare: ``v1.33.2+k3s1`` -> ``1.33.2``."""
    git = str(version_info.get("gitVersion") or "")
    match = _SEMVER_PREFIX.match(git)
    if match:
        return match.group(1)
    major = str(version_info.get("major") or "").rstrip("+")
    minor = str(version_info.get("minor") or "").rstrip("+")
    return f"{major}.{minor}" if major and minor else git


def image_version(image: str) -> str | None:
    """The version in an image tag: ``quay.io/cilium/cilium:v1.17.9@sha256:..`` -> ``1.17.9``.

    Vendor builds append a suffix (``1.17.9-250818`` on AKS); only the semver is kept.
    """
    reference = image.split("@", 1)[0]
    last = reference.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    match = _SEMVER_PREFIX.match(last.rsplit(":", 1)[1])
    return match.group(1) if match else None


def workload_version(obj: KubeObject, container: str) -> str | None:
    """The image version of ``container`` (or of the first container) of a pod template."""
    containers = ((obj.get("spec") or {}).get("template") or {}).get("spec", {}).get(
        "containers"
    ) or []
    chosen = next((c for c in containers if c.get("name") == container), None)
    if chosen is None and containers:
        chosen = containers[0]
    return image_version(str(chosen.get("image") or "")) if chosen else None


def _observed(obj: KubeObject) -> bool:
    """The controller has seen the latest spec (else its counts describe the old one)."""
    generation = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    return generation is None or observed is None or int(observed) >= int(generation)


def daemonset_rollout(obj: KubeObject, container: str) -> RolloutStatus:
    """A DaemonSet's rollout: scheduled, updated and ready (and available) pods."""
    status = obj.get("status") or {}
    desired = int(status.get("desiredNumberScheduled") or 0)
    ready = min(int(status.get("numberReady") or 0), int(status.get("numberAvailable") or 0))
    updated = int(status.get("updatedNumberScheduled") or 0) if _observed(obj) else 0
    return RolloutStatus(
        name=str(obj["metadata"]["name"]),
        kind="DaemonSet",
        version=workload_version(obj, container),
        desired=desired,
        updated=updated,
        ready=ready,
    )


def deployment_rollout(obj: KubeObject, container: str) -> RolloutStatus:
    """A Deployment's rollout: wanted, updated and ready-and-available replicas."""
    status = obj.get("status") or {}
    spec_replicas = (obj.get("spec") or {}).get("replicas")
    desired = 1 if spec_replicas is None else int(spec_replicas)
    ready = min(int(status.get("readyReplicas") or 0), int(status.get("availableReplicas") or 0))
    updated = int(status.get("updatedReplicas") or 0) if _observed(obj) else 0
    return RolloutStatus(
        name=str(obj["metadata"]["name"]),
        kind="Deployment",
        version=workload_version(obj, container),
        desired=desired,
        updated=updated,
        ready=ready,
    )


def network_mode(config: Mapping[str, str]) -> NetworkMode:
    """Flat (native routing) or overlay, from ``cilium-config``.

    ``routing-mode`` (Cilium >= 1.14) wins; before it, ``tunnel: disabled`` meant
    native routing. Cilium's default is tunnelling, so an empty config is overlay.
    """
    routing = config.get("routing-mode")
    if routing:
        return NetworkMode.FLAT if routing == "native" else NetworkMode.OVERLAY
    if config.get("tunnel") == "disabled":
        return NetworkMode.FLAT
    return NetworkMode.OVERLAY


def decoded_secret(secret: KubeObject | None) -> dict[str, str]:
    """A Secret's ``data`` decoded to text (undecodable entries are skipped)."""
    out: dict[str, str] = {}
    for key, value in ((secret or {}).get("data") or {}).items():
        try:
            out[str(key)] = base64.b64decode(str(value)).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            continue
    return out


def mesh_peers(secret: KubeObject | None) -> list[str]:
    """Peers configured in ``cilium-clustermesh``: keys whose data contains ``endpoints:``."""
    return sorted(k for k, v in decoded_secret(secret).items() if "endpoints:" in v)


def pod_cidrs(nodes: Iterable[KubeObject], config: Mapping[str, str]) -> list[str]:
    """Pod CIDRs from the nodes (``spec.podCIDRs``), else Cilium's cluster-pool ranges."""
    found: list[str] = []
    for node in nodes:
        spec = node.get("spec") or {}
        for cidr in spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []):
            if cidr not in found:
                found.append(str(cidr))
    if not found:
        for key in ("cluster-pool-ipv4-cidr", "cluster-pool-ipv6-cidr"):
            found.extend(c for c in config.get(key, "").split() if c not in found)
    return found


def node_ready(node: KubeObject) -> bool:
    """The node's ``Ready`` condition is True."""
    return condition(node, "Ready").get("status") == "True"


def condition(obj: KubeObject, kind: str) -> dict[str, Any]:
    """``status.conditions[type=kind]`` or an empty dict."""
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return {}


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A Kubernetes LabelSelector (``matchLabels``, ``matchExpressions``) against labels.

    An empty selector matches everything (as in Cluster API's ``clusterSelector``).
    """
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def endpoint_counts(slices: Iterable[KubeObject]) -> tuple[int, int]:
    """(endpoints, ready endpoints) across a service's EndpointSlices.

    A pod in an IPv4 and an IPv6 slice counts once. ``conditions.ready`` unset
    means ready, as the EndpointSlice API defines ("interpret as ready").
    """
    seen: dict[tuple[str, ...], bool] = {}
    for item in slices:
        for endpoint in item.get("endpoints") or []:
            ref = endpoint.get("targetRef") or {}
            identity: tuple[str, ...] = (
                (str(ref.get("kind")), str(ref.get("namespace")), str(ref.get("name")))
                if ref.get("name")
                else tuple(str(a) for a in endpoint.get("addresses") or [])
            )
            ready = (endpoint.get("conditions") or {}).get("ready")
            seen[identity] = seen.get(identity, False) or ready is not False
    return len(seen), sum(seen.values())


def parse_agent_status(output: str) -> list[RemoteClusterStatus]:
    """``cluster-mesh.clusters`` of ``cilium-dbg status -o json`` (absent = no peers)."""
    data = json.loads(output)
    mesh = data.get("cluster-mesh") if isinstance(data, dict) else None
    clusters = (mesh or {}).get("clusters") or []
    return [remote_cluster_status(c) for c in clusters if isinstance(c, dict)]


def remote_cluster_status(data: Mapping[str, Any]) -> RemoteClusterStatus:
    """Parse one entry of ``cilium-dbg status -o json`` ``cluster-mesh.clusters``.

    Cilium's JSON is kebab-case and every field is omitempty (missing = false);
    keys meshfleet does not model are dropped.
    """
    top = RemoteClusterStatus.model_fields
    known = set(top) | {f.alias for f in top.values() if f.alias}
    converted = {k: v for k, v in _kebab_to_camel(data).items() if k in known}
    for nested, model in (("config", RemoteClusterConfig), ("synced", RemoteClusterSynced)):
        if isinstance(converted.get(nested), dict):
            fields = {f.alias or n for n, f in model.model_fields.items()}
            converted[nested] = {k: v for k, v in converted[nested].items() if k in fields}
    return RemoteClusterStatus.model_validate(converted)


def _kebab_to_camel(value: Mapping[str, Any]) -> dict[str, Any]:
    """Cilium's ``num-failures`` keys as the models' ``numFailures`` aliases, nested too."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        head, *rest = key.split("-")
        camel = head + "".join(p.capitalize() for p in rest)
        out[camel] = _kebab_to_camel(item) if isinstance(item, Mapping) else item
    return out


def merge_agent_views(
    agents: Sequence[Sequence[RemoteClusterStatus]], peers: Iterable[str]
) -> list[RemoteClusterStatus]:
    """One member's view of each peer from all its agents, the way the gate must see it.

    A peer missing from any agent is left out (so it reads as missing); otherwise
    the first agent that does not see it fully ready speaks for the member, and
    ``numFailures`` is summed so growth on any agent is noticed.
    """
    merged: list[RemoteClusterStatus] = []
    for peer in peers:
        entries = [next((r for r in agent if r.name == peer), None) for agent in agents]
        present = [e for e in entries if e is not None]
        if not agents or len(present) != len(entries):
            continue
        worst = next((e for e in present if not e.fully_ready), present[0])
        failures = sum(e.num_failures for e in present)
        merged.append(worst.model_copy(update={"num_failures": failures}))
    return merged


def apiserver_endpoint(
    cluster: str, service: KubeObject | None, nodes: Iterable[KubeObject]
) -> PeerEndpoint | str:
    """Where peers reach ``cluster``'s clustermesh-apiserver, or why they cannot (yet).

    As ``cilium clustermesh connect`` reads it: a LoadBalancer's ingress IP (or
    hostname) and service port; a NodePort's node InternalIP and node port. A
    reason starting with "waiting" is temporary (an address being provisioned).
    """
    if service is None:
        return "waiting for Service kube-system/clustermesh-apiserver"
    spec = service.get("spec") or {}
    ports = [p for p in spec.get("ports") or [] if isinstance(p, dict)]
    port = next((p for p in ports if p.get("name") in ("apiserver", "etcd")), None) or (
        ports[0] if ports else None
    )
    if port is None:
        return "Service kube-system/clustermesh-apiserver has no port"
    kind = spec.get("type") or "ClusterIP"
    if kind == "LoadBalancer":
        ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        first = ingress[0] if ingress else {}
        if first.get("ip"):
            return PeerEndpoint(name=cluster, port=int(port["port"]), ips=(str(first["ip"]),))
        if first.get("hostname"):
            return PeerEndpoint(
                name=cluster, port=int(port["port"]), address=str(first["hostname"])
            )
        return "waiting for the clustermesh-apiserver LoadBalancer address"
    if kind == "NodePort":
        for node in nodes:
            if not node_ready(node):
                continue
            for address in (node.get("status") or {}).get("addresses") or []:
                if address.get("type") == "InternalIP" and port.get("nodePort"):
                    return PeerEndpoint(
                        name=cluster, port=int(port["nodePort"]), ips=(str(address["address"]),)
                    )
        return "waiting for a Ready node with an InternalIP for the clustermesh-apiserver NodePort"
    return (
        f"Service kube-system/clustermesh-apiserver is {kind}, unreachable from other clusters: "
        "expose it (Helm clustermesh.apiserver.service.type LoadBalancer or NodePort)"
    )


def parse_service_table(output: str) -> dict[tuple[str, str], set[str]]:
    """``cilium-dbg service list -o json``: the *active* backend IPs of each Service.

    Field names checked against Cilium's ``api/v1/openapi.yaml`` (``Service``,
    ``ServiceSpec``, ``BackendAddress``): a JSON array of ``{spec, status.realized}``.
    The backends are read from ``status.realized`` (what the datapath holds, and
    what ``cilium-dbg service list`` itself prints; ``spec`` if absent); the key
    ``(namespace, name)`` from ``ServiceSpec.flags.namespace``/``flags.name``; the
    frontends of one Service (ClusterIP, each port, NodePort) are merged.
    ``BackendAddress.state`` is ``active``, ``terminating``, ``quarantined`` or
    ``maintenance``; only ``active`` takes new traffic, and an empty or missing
    state is ``active`` (``GetBackendState`` in ``pkg/loadbalancer``).
    ``BackendAddress.ip`` is an ``AddrCluster`` string, ``10.0.0.1@3`` when it
    carries a cluster ID (``pkg/clustermesh/types/addr.go``): the IP is the part
    before ``@``.
    """
    data = json.loads(output)
    if not isinstance(data, list):
        raise ValueError("cilium-dbg service list output is not a list")
    table: dict[tuple[str, str], set[str]] = {}
    for entry in data:
        spec = (entry or {}).get("spec") or {}
        realized = ((entry or {}).get("status") or {}).get("realized") or spec
        flags = spec.get("flags") or realized.get("flags") or {}
        if not flags.get("name") or not flags.get("namespace"):
            continue
        backends = table.setdefault((str(flags["namespace"]), str(flags["name"])), set())
        for backend in realized.get("backend-addresses") or []:
            if (backend.get("state") or "active") == "active" and backend.get("ip"):
                backends.add(str(backend["ip"]).split("@", 1)[0])
    return table


def owner_of(ip: str, cidrs: Mapping[str, Sequence[str]]) -> str | None:
    """The member whose pod CIDRs hold ``ip`` (they never overlap in a mesh), or None."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    for member, ranges in cidrs.items():
        for cidr in ranges:
            try:
                if address in ipaddress.ip_network(cidr, strict=False):
                    return member
            except ValueError:
                continue
    return None


#: Where Cilium mounts the connection files (the ``common-`` ones: the member's own
#: client certificate from Secret ``clustermesh-apiserver-remote-cert``).
CLUSTERMESH_DIR = "/var/lib/cilium/clustermesh"


def connection_config(peer: PeerEndpoint) -> str:
    """One connection entry, as Cilium's chart renders it for a peer given by address.

    An etcd client configuration: the peer's clustermesh-apiserver endpoint and
    the shared-CA client files. References to files only: no key material.
    """
    host = peer.address or (peer.ips[0] if peer.ips else peer.name)
    return (
        f"endpoints:\n- https://{host}:{peer.port}\n"
        f"trusted-ca-file: {CLUSTERMESH_DIR}/common-etcd-client-ca.crt\n"
        f"key-file: {CLUSTERMESH_DIR}/common-etcd-client.key\n"
        f"cert-file: {CLUSTERMESH_DIR}/common-etcd-client.crt\n"
    )
