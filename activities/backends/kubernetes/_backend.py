"""The Kubernetes fleet backend: real clusters through Cluster API, Cilium and EndpointSlices.

Implements :class:`engine.domain.backend.FleetBackend` over the official
``kubernetes`` client (every request through :class:`ClusterApi`, so the calls
are declared in one place). Cilium's own view of the mesh comes from
``cilium-dbg status -o json`` in each agent pod, run through the injectable
:class:`PodExec`.

Where state must survive a worker crash it is kept on the objects themselves:
the pre-drain annotations on the Service (see ``_drain``), and the records of
long-running operations (idempotency key, target, start time, outcome) as the
JSON annotation ``meshfleet.io/operations`` on the member's Cluster API
``Cluster`` (or, for members reached by kubeconfig context, on ``cilium-config``).

Does I/O.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import datetime as dt
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from pydantic import Field, ValidationError

from activities.backends.kubernetes import _api as calls
from activities.backends.kubernetes._access import (
    CiliumManagement,
    ClusterClients,
    KubernetesAccess,
    MemberTarget,
    MeshConfig,
)
from activities.backends.kubernetes._api import (
    CILIUM_AGENT,
    CILIUM_CONFIG,
    CILIUM_OPERATOR,
    CLUSTERMESH_APISERVER,
    CLUSTERMESH_SECRET,
    KUBE_SYSTEM,
    KVSTOREMESH_SECRET,
    REMOTE_CERT_SECRET,
    SERVER_CERT_SECRET,
    ClusterApi,
    KubeObject,
)
from activities.backends.kubernetes._drain import plan_annotations
from activities.backends.kubernetes._exec import (
    AGENT_STATUS_COMMAND,
    SERVICE_LIST_COMMAND,
    ExecTarget,
    PodExec,
    stream_exec,
)
from activities.backends.kubernetes._objects import (
    apiserver_endpoint,
    condition,
    connection_config,
    daemonset_rollout,
    deployment_rollout,
    endpoint_counts,
    kubernetes_version,
    merge_agent_views,
    mesh_peers,
    meta,
    network_mode,
    node_ready,
    owner_of,
    parse_agent_status,
    parse_service_table,
    pod_cidrs,
    selector_matches,
)
from activities.backends.kubernetes._values import (
    ANNOTATION_PRE_MESH_VALUES,
    CLUSTER_ID,
    CLUSTER_NAME,
    CONFIG_CLUSTERS,
    CONFIG_ENABLED,
    USE_APISERVER,
    PeerEndpoint,
    PreMeshValues,
    read_values,
    set_value,
)
from engine.domain.backend import (
    ClusterUnavailableError,
    OperationConflictError,
    OperationInProgressError,
    OperationKind,
    OperationProgress,
    OperationState,
)
from engine.domain.errors import MeshfleetError, NotFoundError
from engine.domain.membership import JoinCheck, MemberDescription, join_prerequisite_failures
from engine.domain.mesh import (
    MemberMeshView,
    MeshHealth,
    NotReadyLink,
    RemoteClusterStatus,
    RolloutStatus,
)
from engine.domain.model import DomainModel
from engine.domain.names import MAX_CLUSTER_ID, MIN_CLUSTER_ID
from engine.domain.services import (
    AnnotationChange,
    BackendSource,
    ClusterServiceState,
    GlobalService,
    RoutingView,
)
from engine.domain.versions import Version

__all__ = [
    "ANNOTATION_MIN_READY_ENDPOINTS",
    "ANNOTATION_OPERATIONS",
    "LABEL_NETWORK",
    "CiliumUpgradeNotPossibleError",
    "ControlPlaneUpgradeNotPossibleError",
    "KubernetesBackend",
]

log = structlog.get_logger(__name__)
T = TypeVar("T")
#: One agent's service table: active backend IPs per ``(namespace, name)``.
ServiceTable = dict[tuple[str, str], set[str]]

#: With KVStoreMesh, the agents' entry for every peer: the local kvstoremesh.
LOCAL_KVSTOREMESH_CONFIG = (
    "endpoints:\n- https://clustermesh-apiserver.kube-system.svc:2379\n"
    "trusted-ca-file: /var/lib/cilium/clustermesh/local-etcd-client-ca.crt\n"
    "key-file: /var/lib/cilium/clustermesh/local-etcd-client.key\n"
    "cert-file: /var/lib/cilium/clustermesh/local-etcd-client.crt\n"
)
AGENT_SELECTOR = "k8s-app=cilium"
AGENT_CONTAINER = "cilium-agent"

#: ``cilium-config`` label: the network ``enable_mesh`` recorded.
LABEL_NETWORK = "meshfleet.io/network"
#: Service annotation: ready endpoints a global service needs from every viewpoint.
ANNOTATION_MIN_READY_ENDPOINTS = "meshfleet.io/min-ready-endpoints"
#: JSON map idempotency key -> operation record, on the Cluster (or ``cilium-config``).
ANNOTATION_OPERATIONS = "meshfleet.io/operations"
#: Agent DaemonSet labels that mean the cloud provider installs and upgrades Cilium.
PROVIDER_MANAGED_LABELS = ("kubernetes.azure.com/managedby", "addonmanager.kubernetes.io/mode")

_MAX_RECORDS = 20
_MAX_REMEMBERED = 1024


class ControlPlaneUpgradeNotPossibleError(MeshfleetError):
    """The member's control plane cannot be upgraded by meshfleet as configured."""


class CiliumUpgradeNotPossibleError(MeshfleetError):
    """The member's bundled Cilium cannot be upgraded (or verified) by meshfleet."""


class _OperationRecord(DomainModel):
    """What meshfleet started, kept on the cluster so any worker can follow it."""

    key: str
    kind: OperationKind
    target_version: str | None = None
    started_at: dt.datetime
    #: Set once the outcome is final (then it never changes).
    state: OperationState | None = None
    finished_at: dt.datetime | None = None
    message: str | None = None
    #: Cilium upgrades: how Cilium is managed, and the HelmChartProxy patched.
    mode: CiliumManagement | None = None
    helm_chart_proxy: str | None = None
    extra: dict[str, str] = Field(default_factory=dict)


@dataclass(frozen=True)
class _Holder:
    """The object whose annotation keeps a member's operation records."""

    api: ClusterApi
    get: calls.ApiCall
    patch: calls.ApiCall
    namespace: str
    name: str


@dataclass(frozen=True)
class _ServiceCopy:
    state: ClusterServiceState
    min_ready: int | None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class KubernetesBackend:
    """:class:`~engine.domain.backend.FleetBackend` over real clusters.

    ``access`` says how to reach each member (see :func:`load_access`);
    ``pod_exec`` runs ``cilium-dbg status -o json`` in agent pods (the exec API
    by default).
    """

    def __init__(self, access: KubernetesAccess, *, pod_exec: PodExec = stream_exec) -> None:
        self.access = access
        self.clients = ClusterClients(access)
        self._exec = pod_exec
        # Bounds the execs of one poll across all members (the per-poll budget).
        self._exec_slots = asyncio.Semaphore(access.exec_concurrency)
        self._cidrs: dict[str, list[str]] = {}
        # key -> (what was asked, what was answered): same-process retries of mutations.
        self._remembered: collections.OrderedDict[str, tuple[str, AnnotationChange]] = (
            collections.OrderedDict()
        )

    # --- describing members ---------------------------------------------------------------

    async def describe_member(self, cluster: str) -> MemberDescription:
        """What ``cluster`` is and runs, read from its API (``apiAvailable: false`` if down)."""
        target = await self.clients.target(cluster)
        base: dict[str, Any] = {
            "name": cluster,
            "labels": dict(target.labels),
            "update_group": target.update_group,
            "maintenance_window": target.maintenance_window,
        }
        try:
            api = await self.clients.member(cluster)
            version, agent, config, secret, apiserver, nodes = await asyncio.gather(
                api.version(),
                api.get(calls.GET_DAEMONSET, CILIUM_AGENT, namespace=KUBE_SYSTEM),
                api.get(calls.GET_CONFIGMAP, CILIUM_CONFIG, namespace=KUBE_SYSTEM),
                api.get(calls.GET_SECRET, CLUSTERMESH_SECRET, namespace=KUBE_SYSTEM),
                api.get(calls.GET_DEPLOYMENT, CLUSTERMESH_APISERVER, namespace=KUBE_SYSTEM),
                api.list(calls.LIST_NODES),
            )
        except ClusterUnavailableError as error:
            self.clients.forget(cluster)
            log.info("kubernetes.member_unavailable", cluster=cluster, reason=error.reason)
            return MemberDescription(
                **base,
                kubernetes_version="",
                cilium_version="",
                api_available=False,
                healthy=False,
                reason=error.reason,
            )
        data = {str(k): str(v) for k, v in ((config or {}).get("data") or {}).items()}
        network = meta(config, "labels").get(LABEL_NETWORK) if config else None
        peers = mesh_peers(secret)
        rollout = daemonset_rollout(agent, AGENT_CONTAINER) if agent else None
        problems: list[str] = []
        if agent is None:
            problems.append("the Cilium agent DaemonSet kube-system/cilium does not exist")
        elif not rollout or not rollout.rolled_out:
            problems.append(
                f"the Cilium agent is not rolled out ({rollout.ready if rollout else 0}/"
                f"{rollout.desired if rollout else 0} ready)"
            )
        not_ready = [str(n["metadata"]["name"]) for n in nodes if not node_ready(n)]
        if not_ready:
            problems.append(f"nodes not Ready: {', '.join(sorted(not_ready))}")
        cilium_name = data.get("cluster-name")
        if cilium_name and cilium_name != cluster:
            problems.append(f"cilium-config cluster-name is {cilium_name!r}, not {cluster!r}")
        try:
            cluster_id: int | None = int(data["cluster-id"]) if "cluster-id" in data else None
        except ValueError:
            cluster_id = None
        return MemberDescription(
            **base,
            kubernetes_version=kubernetes_version(version),
            cilium_version=(rollout.version if rollout else None) or "",
            cluster_id=cluster_id,
            pod_cidrs=pod_cidrs(nodes, data),
            network_mode=network_mode(data),
            acns=agent is not None,
            # A clustermesh-apiserver alone is a mesh-ready install; peers without our record
            # are a mesh someone else runs.
            self_managed_mesh=network is None and bool(peers),
            mesh_enabled=network is not None and apiserver is not None,
            network=network,
            mesh_peers=peers,
            nodes=len(nodes),
            healthy=not problems,
            reason="; ".join(problems) or None,
        )

    async def check_join_prerequisites(
        self, cluster: str, network: str, members: Sequence[str]
    ) -> JoinCheck:
        """The membership rules, checked against what the clusters report."""
        candidate, *peers = await asyncio.gather(
            self.describe_member(cluster), *(self.describe_member(m) for m in members)
        )
        return JoinCheck(
            cluster=cluster,
            network=network,
            failed=join_prerequisite_failures(candidate, network, peers),
        )

    # --- mesh health ----------------------------------------------------------------------

    async def mesh_health(self, members: Sequence[str], *, focus: str | None = None) -> MeshHealth:
        """Each member's agents' view of the others, and its mesh components' rollout.

        With ``focus``, every agent is still asked (one exec per member either way);
        the views of the others keep only their entry for the focus.
        """
        views = await asyncio.gather(*(self._mesh_view(m, members) for m in members))
        if focus is not None:
            for view in views:
                if view.cluster != focus:
                    view.remote_clusters = [r for r in view.remote_clusters if r.name == focus]
        return MeshHealth(observed_at=_now(), members=list(views), focus=focus)

    async def not_ready_links(
        self, members: Sequence[str], *, focus: str | None = None
    ) -> list[NotReadyLink]:
        """The problems of :meth:`mesh_health` (each agent is asked either way)."""
        return (await self.mesh_health(members, focus=focus)).not_ready_links()

    async def _mesh_view(self, cluster: str, members: Sequence[str]) -> MemberMeshView:
        await self.clients.target(cluster)
        try:
            api = await self.clients.member(cluster)
            agent, apiserver, secret, pods = await asyncio.gather(
                api.get(calls.GET_DAEMONSET, CILIUM_AGENT, namespace=KUBE_SYSTEM),
                api.get(calls.GET_DEPLOYMENT, CLUSTERMESH_APISERVER, namespace=KUBE_SYSTEM),
                api.get(calls.GET_SECRET, CLUSTERMESH_SECRET, namespace=KUBE_SYSTEM),
                api.list(calls.LIST_PODS, namespace=KUBE_SYSTEM, label_selector=AGENT_SELECTOR),
            )
        except ClusterUnavailableError as error:
            self.clients.forget(cluster)
            return MemberMeshView(cluster=cluster, api_available=False, error=error.reason)
        view = MemberMeshView(
            cluster=cluster,
            agent=daemonset_rollout(agent, AGENT_CONTAINER) if agent else None,
            clustermesh_apiserver=deployment_rollout(apiserver, "apiserver") if apiserver else None,
        )
        if agent is None:
            view.error = "Cilium is not installed (no DaemonSet kube-system/cilium)"
            return view
        if apiserver is None:
            view.error = "the mesh is not enabled (no Deployment kube-system/clustermesh-apiserver)"
            return view
        running = _running_agents(pods)
        if not running:
            view.error = "no running Cilium agent pod to ask"
            return view
        outputs = await asyncio.gather(
            *(self._agent_status(api, cluster, pod) for pod in running), return_exceptions=True
        )
        agents: list[list[RemoteClusterStatus]] = []
        for pod, output in zip(running, outputs, strict=True):
            if isinstance(output, BaseException):
                if isinstance(output, asyncio.CancelledError):
                    raise output
                log.info(
                    "kubernetes.agent_status_failed",
                    cluster=cluster,
                    pod=pod,
                    error_type=type(output).__name__,
                )
                view.error = f"agent pod {pod}: cilium-dbg status failed ({type(output).__name__})"
                return view
            agents.append(output)
        expected = (set(members) - {cluster}) | set(mesh_peers(secret))
        seen = {r.name for agent_view in agents for r in agent_view}
        view.remote_clusters = merge_agent_views(agents, sorted(expected | seen))
        return view

    async def _agent_status(
        self, api: ClusterApi, cluster: str, pod: str
    ) -> list[RemoteClusterStatus]:
        target = ExecTarget(
            cluster=cluster,
            namespace=KUBE_SYSTEM,
            pod=pod,
            container=AGENT_CONTAINER,
            command=AGENT_STATUS_COMMAND,
        )
        output = await self._exec(api, target)
        try:
            return parse_agent_status(output)
        except (ValueError, ValidationError):
            raise ValueError("unreadable cilium-dbg status output") from None

    # --- the mesh configuration ------------------------------------------------------------
    #
    # On a member whose Cilium a HelmChartProxy installs (CAAPH), joining and leaving
    # are Helm values: meshfleet owns cluster.name, cluster.id, clustermesh.useAPIServer,
    # clustermesh.config.enabled and clustermesh.config.clusters in that member's own
    # HelmChartProxy ``valuesTemplate`` (see ``_values``), and the chart renders the
    # clustermesh-apiserver and the connection Secrets from them. Other members are
    # checked, not configured: their Cilium install must list the peers itself.

    async def enable_mesh(
        self,
        cluster: str,
        *,
        network: str,
        idempotency_key: str,
        cluster_id: int | None = None,
    ) -> OperationProgress:
        """Claim ``cluster`` for ``network``, write its own mesh values, and follow the rollout.

        The claim is the ``meshfleet.io/network`` label on ``cilium-config``, written
        only on the version that was read: of two concurrent joins into different
        networks exactly one claims the cluster, the other is refused. On a
        CAAPH-managed member the HelmChartProxy gets ``cluster.name``, ``cluster.id``
        (``cluster_id``, the network's allocation), ``clustermesh.useAPIServer`` and
        ``clustermesh.config.enabled`` before it has any peer; the operation is done
        when the chart's clustermesh-apiserver is rolled out and has an address.
        Elsewhere the clustermesh-apiserver must come with the Cilium install.
        """
        api = await self.clients.member(cluster)
        config = await api.get(calls.GET_CONFIGMAP, CILIUM_CONFIG, namespace=KUBE_SYSTEM)
        if config is None:
            raise MeshfleetError(f"cluster {cluster!r}: Cilium is not installed (no cilium-config)")
        target = await self.clients.target(cluster)
        proxy = await self._mesh_chart_proxy(cluster, target)
        if proxy is None:
            apiserver = await api.get(
                calls.GET_DEPLOYMENT, CLUSTERMESH_APISERVER, namespace=KUBE_SYSTEM
            )
            if apiserver is None:
                raise MeshfleetError(
                    f"cluster {cluster!r}: the clustermesh-apiserver is not deployed and no "
                    "HelmChartProxy installs its Cilium; enable it in the Cilium install (Helm "
                    "value clustermesh.useAPIServer=true)"
                )
        await self._claim(api, cluster, network)
        holder = await self._holder(cluster)
        record = await self._begin(
            holder, cluster, idempotency_key, OperationKind.ENABLE_MESH, network
        )
        if proxy is not None and record.state is None:
            own = _int_or_none((config.get("data") or {}).get("cluster-id"))
            chosen = cluster_id if cluster_id is not None else own
            if chosen is None or not MIN_CLUSTER_ID <= chosen <= MAX_CLUSTER_ID:
                raise MeshfleetError(
                    f"cluster {cluster!r}: no valid cluster id to write (got {chosen}; the "
                    f"network allocates {MIN_CLUSTER_ID}..{MAX_CLUSTER_ID})"
                )
            await self._write_mesh_values(
                cluster, target, lambda values: _joined_values(cluster, values, chosen)
            )
        log.info("kubernetes.mesh_enabled", cluster=cluster, network=network, key=idempotency_key)
        return await self._progress(cluster, holder, record)

    async def _claim(self, api: ClusterApi, cluster: str, network: str) -> None:
        """Label ``cilium-config`` with ``network`` unless another network holds it (atomic)."""

        def claim(config: KubeObject) -> dict[str, Any] | None:
            recorded = meta(config, "labels").get(LABEL_NETWORK)
            if recorded is not None and recorded != network:
                raise MeshfleetError(
                    f"cluster {cluster!r} already belongs to network {recorded!r}, not {network!r}"
                )
            if recorded == network:
                return None
            return {"metadata": {"labels": {LABEL_NETWORK: network}}}

        claimed = await calls.read_modify_write(
            api,
            calls.GET_CONFIGMAP,
            calls.PATCH_CONFIGMAP,
            CILIUM_CONFIG,
            claim,
            namespace=KUBE_SYSTEM,
        )
        if claimed is None:
            raise MeshfleetError(f"cluster {cluster!r}: Cilium is not installed (no cilium-config)")

    async def disable_mesh(self, cluster: str, *, idempotency_key: str) -> None:
        """Give the cluster its own mesh values back (CAAPH) and remove the network label."""
        target = await self.clients.target(cluster)
        proxy = await self._mesh_chart_proxy(cluster, target)
        if proxy is not None:
            await self._write_mesh_values(cluster, target, _restored_values)
        api = await self.clients.member(cluster)

        def release(config: KubeObject) -> dict[str, Any] | None:
            if LABEL_NETWORK not in meta(config, "labels"):
                return None
            return {"metadata": {"labels": {LABEL_NETWORK: None}}}

        await calls.read_modify_write(
            api,
            calls.GET_CONFIGMAP,
            calls.PATCH_CONFIGMAP,
            CILIUM_CONFIG,
            release,
            namespace=KUBE_SYSTEM,
        )
        log.info("kubernetes.mesh_disabled", cluster=cluster, key=idempotency_key)

    async def connect_peers(
        self, cluster: str, peers: Sequence[str], *, idempotency_key: str
    ) -> None:
        """List ``peers`` in ``cluster``'s ``clustermesh.config.clusters`` (CAAPH), or check them.

        Each peer's entry is its clustermesh-apiserver address and port, read from
        that peer's ``kube-system/clustermesh-apiserver`` Service. Members not
        installed by a HelmChartProxy must already list the peers in Secret
        ``cilium-clustermesh`` (their Cilium install owns it).
        """
        target = await self.clients.target(cluster)
        if target.mesh is MeshConfig.CONNECTION_SECRETS:
            await self._same_ca(cluster, peers)
            endpoints = await asyncio.gather(*(self._apiserver_endpoint(p) for p in peers))
            await self._write_connections(
                cluster,
                {e.name: connection_config(e) for e in endpoints if e.name != cluster},
            )
            log.info(
                "kubernetes.peers_connected",
                cluster=cluster,
                peers=list(peers),
                key=idempotency_key,
                mode=target.mesh.value,
            )
            return
        if await self._mesh_chart_proxy(cluster, target) is not None:
            endpoints = await asyncio.gather(*(self._apiserver_endpoint(p) for p in peers))
            await self._write_mesh_values(
                cluster, target, lambda values: _with_peers(cluster, values, endpoints)
            )
            log.info(
                "kubernetes.peers_connected",
                cluster=cluster,
                peers=list(peers),
                key=idempotency_key,
            )
            return
        configured = set(await self._configured_peers(cluster))
        missing = sorted(set(peers) - configured)
        if missing:
            raise MeshfleetError(
                f"cluster {cluster!r}: peers {missing} are not configured in Secret "
                f"kube-system/{CLUSTERMESH_SECRET}; add them to the Cilium Helm values "
                "clustermesh.config.clusters"
            )

    async def disconnect_peers(
        self, cluster: str, peers: Sequence[str], *, idempotency_key: str
    ) -> None:
        """Take ``peers`` out of ``cluster``'s ``clustermesh.config.clusters`` (or check it)."""
        target = await self.clients.target(cluster)
        if target.mesh is MeshConfig.CONNECTION_SECRETS:
            await self._write_connections(cluster, dict.fromkeys(peers))
            log.info(
                "kubernetes.peers_disconnected",
                cluster=cluster,
                peers=list(peers),
                key=idempotency_key,
                mode=target.mesh.value,
            )
            return
        if await self._mesh_chart_proxy(cluster, target) is not None:
            await self._write_mesh_values(
                cluster, target, lambda values: _without_peers(values, peers)
            )
            log.info(
                "kubernetes.peers_disconnected",
                cluster=cluster,
                peers=list(peers),
                key=idempotency_key,
            )
            return
        still = sorted(set(peers) & set(await self._configured_peers(cluster)))
        if still:
            raise MeshfleetError(
                f"cluster {cluster!r}: peers {still} are still configured in Secret "
                f"kube-system/{CLUSTERMESH_SECRET}; remove them from the Cilium Helm values "
                "clustermesh.config.clusters"
            )

    async def _write_connections(self, cluster: str, entries: Mapping[str, str | None]) -> None:
        """Set (or, with None, remove) one connection entry per peer, as the chart renders them.

        Without KVStoreMesh the agents read Secret ``cilium-clustermesh``: the entry
        points at the peer. With KVStoreMesh (the clustermesh-apiserver has a
        ``kvstoremesh`` container) ``cilium-kvstoremesh`` gets that entry and the
        agents' ``cilium-clustermesh`` entry points at the local kvstoremesh. Each
        Secret is written on the version read; entries are never logged.
        """
        api = await self.clients.member(cluster)
        apiserver = await api.get(
            calls.GET_DEPLOYMENT, CLUSTERMESH_APISERVER, namespace=KUBE_SYSTEM
        )
        containers = (((apiserver or {}).get("spec") or {}).get("template") or {}).get(
            "spec", {}
        ).get("containers") or []
        kvstoremesh = any(c.get("name") == "kvstoremesh" for c in containers)
        writes = {CLUSTERMESH_SECRET: dict(entries)}
        if kvstoremesh:
            writes = {
                KVSTOREMESH_SECRET: dict(entries),
                CLUSTERMESH_SECRET: {
                    peer: None if entry is None else LOCAL_KVSTOREMESH_CONFIG
                    for peer, entry in entries.items()
                },
            }
        for name, wanted in writes.items():

            def patch(secret: KubeObject, wanted: Mapping[str, str | None] = wanted) -> Any:
                data = secret.get("data") or {}
                body = {
                    peer: None if entry is None else _b64(entry)
                    for peer, entry in wanted.items()
                    if (entry is None and peer in data)
                    or (entry is not None and data.get(peer) != _b64(entry))
                }
                return {"data": body} if body else None

            found = await calls.read_modify_write(
                api, calls.GET_SECRET, calls.PATCH_SECRET, name, patch, namespace=KUBE_SYSTEM
            )
            if found is None:
                raise MeshfleetError(
                    f"cluster {cluster!r}: Secret {KUBE_SYSTEM}/{name} does not exist; the "
                    "Cilium install creates it with the clustermesh-apiserver"
                )

    async def _same_ca(self, cluster: str, peers: Sequence[str]) -> None:
        """Refuse peers whose clustermesh-apiserver is not signed by the CA ``cluster`` trusts.

        Connection entries use the member's own client certificate (Secret
        ``clustermesh-apiserver-remote-cert``, projected by Cilium as the
        ``common-etcd-client`` files): that only works with one CA for the whole
        mesh. Only the public CA certificates are compared, in memory.
        """

        async def ca(member: str, secret: str) -> str | None:
            api = await self.clients.member(member)
            found = await api.get(calls.GET_SECRET, secret, namespace=KUBE_SYSTEM)
            return str(((found or {}).get("data") or {}).get("ca.crt") or "") or None

        own = await ca(cluster, REMOTE_CERT_SECRET)
        theirs = await asyncio.gather(*(ca(p, SERVER_CERT_SECRET) for p in peers))
        if own is None:
            raise MeshfleetError(
                f"cluster {cluster!r}: Secret {KUBE_SYSTEM}/{REMOTE_CERT_SECRET} has no ca.crt; "
                "connection Secrets need the clustermesh client certificate of a shared CA"
            )
        different = sorted(p for p, c in zip(peers, theirs, strict=True) if c != own)
        if different:
            raise MeshfleetError(
                f"cluster {cluster!r}: the clustermesh-apiserver of {different} is not signed by "
                f"the CA {cluster!r} trusts; give every member's Cilium one shared CA"
            )

    async def _configured_peers(self, cluster: str) -> list[str]:
        api = await self.clients.member(cluster)
        secret = await api.get(calls.GET_SECRET, CLUSTERMESH_SECRET, namespace=KUBE_SYSTEM)
        return mesh_peers(secret)

    async def _mesh_chart_proxy(self, cluster: str, target: MemberTarget) -> KubeObject | None:
        """The member's own Cilium HelmChartProxy, when meshfleet configures the mesh there."""
        if target.cluster_api is None or target.cilium is CiliumManagement.PROVIDER_MANAGED:
            return None
        proxy = await self._cilium_chart_proxy(cluster, target)
        if proxy is None:
            if target.cilium is CiliumManagement.HELM_CHART_PROXY:
                raise MeshfleetError(
                    f"cluster {cluster!r}: no HelmChartProxy for chart 'cilium' selects it"
                )
            return None
        await self._only_this_cluster(cluster, target, proxy)
        return proxy

    async def _write_mesh_values(
        self,
        cluster: str,
        target: MemberTarget,
        change: Callable[[_ProxyValues], _ProxyValues],
    ) -> None:
        """Rewrite the owned values of ``cluster``'s HelmChartProxy on the version read."""
        assert target.cluster_api is not None
        management = await self.clients.management(target.cluster_api.management_context)
        proxy = await self._cilium_chart_proxy(cluster, target)
        assert proxy is not None

        def patch(current: KubeObject) -> dict[str, Any] | None:
            text = str((current.get("spec") or {}).get("valuesTemplate") or "")
            before = _ProxyValues(text, PreMeshValues.read(meta(current, "annotations")))
            after = change(before)
            if after == before:
                return None
            record = after.record.dump() if after.record is not None else None
            return {
                "metadata": {"annotations": {ANNOTATION_PRE_MESH_VALUES: record}},
                "spec": {"valuesTemplate": after.text},
            }

        await calls.read_modify_write(
            management,
            calls.GET_HELM_CHART_PROXY,
            calls.PATCH_HELM_CHART_PROXY,
            _name(proxy),
            patch,
            namespace=target.cluster_api.namespace,
        )

    async def _apiserver_endpoint(self, peer: str) -> PeerEndpoint:
        """Where ``peer``'s clustermesh-apiserver answers, from its Service."""
        api = await self.clients.member(peer)
        service, nodes = await asyncio.gather(
            api.get(calls.GET_SERVICE, CLUSTERMESH_APISERVER, namespace=KUBE_SYSTEM),
            api.list(calls.LIST_NODES),
        )
        if service is None:
            raise ClusterUnavailableError(
                peer, f"Service {KUBE_SYSTEM}/{CLUSTERMESH_APISERVER} does not exist yet"
            )
        found = apiserver_endpoint(peer, service, nodes)
        if isinstance(found, str):
            if found.startswith("waiting"):
                raise ClusterUnavailableError(peer, found)
            raise MeshfleetError(f"cluster {peer!r}: {found}")
        return found

    # --- long-running operations -------------------------------------------------------------

    async def target_problem(
        self, cluster: str, kubernetes_version: str, cilium_version: str
    ) -> str | None:
        """Refuse a target without a patch number: Cluster API and Helm need ``vX.Y.Z``.

        Minor-only targets (``1.33``) are resolved to a concrete patch from the
        release catalog at plan time; one that reaches a member is refused here,
        at preflight, before the member is drained.
        """
        for what, text in (("Kubernetes", kubernetes_version), ("Cilium", cilium_version)):
            try:
                version = Version.parse(text)
            except ValueError as error:
                return f"cluster {cluster!r}: target {what} version {text!r} is not valid: {error}"
            if version.patch is None:
                return (
                    f"cluster {cluster!r}: target {what} version {text!r} has no patch number; "
                    "the Kubernetes backend upgrades to a concrete MAJOR.MINOR.PATCH (resolve "
                    "the target from the release catalog at plan time)"
                )
        return None

    async def start_control_plane_upgrade(
        self, cluster: str, target_version: str, *, idempotency_key: str
    ) -> OperationProgress:
        """Patch the Cluster's ``spec.topology.version``; Cluster API rolls the control plane."""
        version = _full_version(cluster, target_version)
        target = await self.clients.target(cluster)
        if target.cluster_api is None:
            raise ControlPlaneUpgradeNotPossibleError(
                f"cluster {cluster!r} is reached by kubeconfig context, not through Cluster API; "
                "meshfleet upgrades control planes by patching the Cluster API Cluster "
                "(give it a 'clusterAPI' reference in the access file)"
            )
        holder = await self._holder(cluster)
        obj = await self._cluster_object(cluster, target)
        topology = (obj.get("spec") or {}).get("topology")
        if not topology:
            raise ControlPlaneUpgradeNotPossibleError(
                f"cluster {cluster!r}: Cluster {_ref(target)} has no spec.topology (it is not "
                "built from a ClusterClass), so its version cannot be set there"
            )
        current = str(topology.get("version") or "")
        if current and Version.parse(current) > version:
            raise ControlPlaneUpgradeNotPossibleError(
                f"cluster {cluster!r} is at {current.lstrip('v')}; control planes never move down "
                f"(asked for {version})"
            )
        record = await self._begin(
            holder,
            cluster,
            idempotency_key,
            OperationKind.CONTROL_PLANE_UPGRADE,
            str(version),
            spec={"spec": {"topology": {"version": f"v{version}"}}},
        )
        log.info(
            "kubernetes.control_plane_upgrade.started",
            cluster=cluster,
            key=idempotency_key,
            target=str(version),
            from_version=current,
        )
        return await self._progress(cluster, holder, record)

    async def start_cilium_upgrade(
        self, cluster: str, target_version: str, *, idempotency_key: str
    ) -> OperationProgress:
        """Upgrade the bundled Cilium (HelmChartProxy) or verify the provider did it."""
        version = _full_version(cluster, target_version)
        target = await self.clients.target(cluster)
        holder = await self._holder(cluster)
        existing = (await self._records(holder))[1].get(idempotency_key)
        if existing is not None:
            _check_same(existing, cluster, OperationKind.CILIUM_UPGRADE, str(version))
            return await self._progress(cluster, holder, existing)
        mode, proxy = await self._cilium_management(cluster, target)
        if mode is CiliumManagement.HELM_CHART_PROXY:
            assert proxy is not None
            await self._check_helm_chart_proxy(cluster, target, proxy)
        record = await self._begin(
            holder,
            cluster,
            idempotency_key,
            OperationKind.CILIUM_UPGRADE,
            str(version),
            mode=mode,
            helm_chart_proxy=_name(proxy) if proxy else None,
        )
        if proxy is not None and target.cluster_api is not None:
            management = await self.clients.management(target.cluster_api.management_context)
            # Only spec.version: valuesTemplate (with clustermesh.config.clusters) is untouched.
            await management.merge_patch(
                calls.PATCH_HELM_CHART_PROXY,
                _name(proxy),
                {"spec": {"version": _chart_version(proxy, version)}},
                namespace=target.cluster_api.namespace,
            )
        log.info(
            "kubernetes.cilium_upgrade.started",
            cluster=cluster,
            key=idempotency_key,
            target=str(version),
            mode=mode.value,
        )
        return await self._progress(cluster, holder, record)

    async def get_operation(self, cluster: str, idempotency_key: str) -> OperationProgress:
        """The operation's progress, read from the cluster now."""
        holder = await self._holder(cluster)
        record = (await self._records(holder))[1].get(idempotency_key)
        if record is None:
            raise NotFoundError(f"cluster {cluster!r}: no operation with key {idempotency_key!r}")
        return await self._progress(cluster, holder, record)

    async def _holder(self, cluster: str) -> _Holder:
        target = await self.clients.target(cluster)
        if target.cluster_api is not None:
            ref = target.cluster_api
            api = await self.clients.management(ref.management_context)
            return _Holder(api, calls.GET_CLUSTER, calls.PATCH_CLUSTER, ref.namespace, ref.cluster)
        api = await self.clients.member(cluster)
        return _Holder(api, calls.GET_CONFIGMAP, calls.PATCH_CONFIGMAP, KUBE_SYSTEM, CILIUM_CONFIG)

    async def _records(self, holder: _Holder) -> tuple[KubeObject, dict[str, _OperationRecord]]:
        obj = await holder.api.get(holder.get, holder.name, namespace=holder.namespace)
        if obj is None:
            raise NotFoundError(
                f"{holder.get.resource} {holder.namespace}/{holder.name} does not exist"
            )
        return obj, _parse_records(obj, holder.name)

    async def _save(
        self,
        holder: _Holder,
        read: KubeObject,
        records: Mapping[str, _OperationRecord],
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Write ``records`` onto the version of the holder that was ``read`` (409 if it moved)."""
        body = _records_body(records)
        body.update(extra or {})
        await holder.api.merge_patch(
            holder.patch,
            holder.name,
            body,
            namespace=holder.namespace,
            resource_version=calls.resource_version(read),
        )

    async def _begin(
        self,
        holder: _Holder,
        cluster: str,
        key: str,
        kind: OperationKind,
        target_version: str,
        *,
        spec: Mapping[str, Any] | None = None,
        mode: CiliumManagement | None = None,
        helm_chart_proxy: str | None = None,
    ) -> _OperationRecord:
        """The record for ``key``: the existing one (a retry), or a new one saved with ``spec``.

        Read, decide and write on one version of the holder: a concurrent start
        (another key, another worker) makes the write conflict, and the decision
        is taken again on what that start recorded.
        """
        for _ in range(calls.CONFLICT_ATTEMPTS):
            _, records = await self._records(holder)
            if key in records:
                _check_same(records[key], cluster, kind, target_version)
                return records[key]
            for other in records.values():
                if other.kind is kind and other.state is None:
                    progress = await self._progress(cluster, holder, other)
                    if not progress.done:
                        raise OperationInProgressError(cluster, kind, other.key)
            read, records = await self._records(holder)
            if key in records or any(r.kind is kind and r.state is None for r in records.values()):
                continue  # changed while the running one was checked: decide again
            record = _OperationRecord(
                key=key,
                kind=kind,
                target_version=target_version,
                started_at=_now(),
                mode=mode,
                helm_chart_proxy=helm_chart_proxy,
                extra={"cluster": cluster},
            )
            records[key] = record
            try:
                # One patch: the record and the change it describes land together or not at all.
                await self._save(holder, read, records, spec)
            except calls.KubernetesConflictError:
                log.info("kubernetes.operation_record_conflict", cluster=cluster, key=key)
                continue
            return record
        raise OperationConflictError(
            f"cluster {cluster!r}: the operation records on {holder.name} kept changing; "
            f"could not record {key!r}"
        )

    async def _progress(
        self, cluster: str, holder: _Holder, record: _OperationRecord
    ) -> OperationProgress:
        if record.state is not None:
            percent = 100 if record.state is OperationState.SUCCEEDED else 0
            components: list[RolloutStatus] = []
            if record.kind is OperationKind.CILIUM_UPGRADE:
                with contextlib.suppress(ClusterUnavailableError):
                    components = await self._components(cluster)
            return self._report(
                cluster, record, record.state, percent, "finished", record.message, components
            )
        if record.kind is OperationKind.CONTROL_PLANE_UPGRADE:
            progress = await self._control_plane_progress(cluster, record)
            timeout = self.access.control_plane_upgrade_timeout
        elif record.kind is OperationKind.CILIUM_UPGRADE:
            progress = await self._cilium_progress(cluster, record)
            timeout = self.access.cilium_upgrade_timeout
        else:
            progress = await self._enable_mesh_progress(cluster, record)
            timeout = self.access.cilium_upgrade_timeout
        if not progress.done and _now() - record.started_at > timeout:
            what = record.kind.value
            progress = progress.model_copy(
                update={
                    "state": OperationState.FAILED,
                    "message": f"{what} of {cluster!r} to {record.target_version} is stuck: not "
                    f"done after {int(timeout.total_seconds())}s (last seen: {progress.phase}"
                    f"{'; ' + progress.message if progress.message else ''})",
                }
            )
        if progress.done:
            finished = record.model_copy(
                update={
                    "state": progress.state,
                    "finished_at": _now(),
                    "message": progress.message,
                }
            )

            def finish(current: KubeObject) -> dict[str, Any] | None:
                records = _parse_records(current, holder.name)
                known = records.get(record.key)
                if known is not None and known.state is not None:
                    return None  # another worker recorded the outcome first
                records[record.key] = finished
                return _records_body(records)

            await calls.read_modify_write(
                holder.api,
                holder.get,
                holder.patch,
                holder.name,
                finish,
                namespace=holder.namespace,
            )
            log.info(
                "kubernetes.operation_finished",
                cluster=cluster,
                key=record.key,
                kind=record.kind.value,
                state=progress.state.value,
                reason=progress.message,
            )
            progress = progress.model_copy(update={"finished_at": finished.finished_at})
        return progress

    def _report(
        self,
        cluster: str,
        record: _OperationRecord,
        state: OperationState,
        percent: int,
        phase: str,
        message: str | None = None,
        components: Sequence[RolloutStatus] = (),
    ) -> OperationProgress:
        return OperationProgress(
            key=record.key,
            cluster=cluster,
            kind=record.kind,
            state=state,
            target_version=record.target_version,
            percent=max(0, min(100, percent)),
            phase=phase,
            message=message,
            started_at=record.started_at,
            finished_at=record.finished_at,
            components=list(components),
        )

    async def _cluster_object(self, cluster: str, target: MemberTarget) -> KubeObject:
        assert target.cluster_api is not None
        ref = target.cluster_api
        api = await self.clients.management(ref.management_context)
        obj = await api.get(calls.GET_CLUSTER, ref.cluster, namespace=ref.namespace)
        if obj is None:
            raise NotFoundError(f"cluster {cluster!r}: Cluster {_ref(target)} does not exist")
        return obj

    async def _control_plane_progress(
        self, cluster: str, record: _OperationRecord
    ) -> OperationProgress:
        target = await self.clients.target(cluster)
        assert target.cluster_api is not None
        assert record.target_version is not None
        obj = await self._cluster_object(cluster, target)
        ref = (obj.get("spec") or {}).get("controlPlaneRef") or {}
        if ref.get("kind") != "KubeadmControlPlane":
            raise ControlPlaneUpgradeNotPossibleError(
                f"cluster {cluster!r}: control plane kind {ref.get('kind')!r} is not supported "
                "(meshfleet follows KubeadmControlPlane)"
            )
        management = await self.clients.management(target.cluster_api.management_context)
        plane = await management.get(
            calls.GET_KUBEADM_CONTROL_PLANE,
            str(ref.get("name")),
            namespace=str(ref.get("namespace") or target.cluster_api.namespace),
        )
        if plane is None:
            raise NotFoundError(f"cluster {cluster!r}: its KubeadmControlPlane does not exist")
        want = Version.parse(record.target_version)
        status = plane.get("status") or {}
        desired = int((plane.get("spec") or {}).get("replicas") or status.get("replicas") or 1)
        updated = int(status.get("updatedReplicas") or 0)
        ready = int(status.get("readyReplicas") or 0)
        seen = str(status.get("version") or "")
        at_target = bool(seen) and Version.parse(seen) == want
        phase = (
            f"control plane at {seen.lstrip('v') or 'unknown'}; {updated}/{desired} machines "
            f"updated, {ready}/{desired} ready"
        )
        failure = _failure(obj) or _failure(plane)
        if failure:
            return self._report(cluster, record, OperationState.FAILED, 0, phase, failure)
        control_plane_ready = condition(obj, "ControlPlaneReady").get("status")
        if at_target and updated >= desired and ready >= desired and control_plane_ready != "False":
            return self._report(cluster, record, OperationState.SUCCEEDED, 100, phase)
        percent = int(99 * min(updated, ready) / desired) if desired else 0
        hint = _condition_hint(obj)
        return self._report(cluster, record, OperationState.RUNNING, percent, phase, hint)

    async def _components(self, cluster: str) -> list[RolloutStatus]:
        api = await self.clients.member(cluster)
        agent, operator, apiserver = await asyncio.gather(
            api.get(calls.GET_DAEMONSET, CILIUM_AGENT, namespace=KUBE_SYSTEM),
            api.get(calls.GET_DEPLOYMENT, CILIUM_OPERATOR, namespace=KUBE_SYSTEM),
            api.get(calls.GET_DEPLOYMENT, CLUSTERMESH_APISERVER, namespace=KUBE_SYSTEM),
        )
        found = [daemonset_rollout(agent, AGENT_CONTAINER)] if agent else []
        if operator:
            found.append(deployment_rollout(operator, CILIUM_OPERATOR))
        if apiserver:
            found.append(deployment_rollout(apiserver, "apiserver"))
        return found

    async def _cilium_progress(self, cluster: str, record: _OperationRecord) -> OperationProgress:
        assert record.target_version is not None
        want = Version.parse(record.target_version)
        try:
            components = await self._components(cluster)
        except ClusterUnavailableError as error:
            self.clients.forget(cluster)
            return self._report(cluster, record, OperationState.RUNNING, 0, error.reason)
        if not components:
            return self._report(
                cluster, record, OperationState.FAILED, 0, "no Cilium agent", "Cilium is gone"
            )
        arrived = [c for c in components if c.version and Version.parse(c.version) == want]
        done = [c for c in arrived if c.rolled_out]
        phase = ", ".join(
            f"{c.name} {c.version or '?'} {c.ready}/{c.desired} ready" for c in components
        )
        percent = int(99 * len(done) / len(components))
        if len(done) == len(components):
            return self._report(
                cluster, record, OperationState.SUCCEEDED, 100, phase, components=components
            )
        if record.mode is CiliumManagement.PROVIDER_MANAGED and all(
            c.rolled_out for c in components
        ):
            versions = sorted({c.version or "?" for c in components})
            return self._report(
                cluster,
                record,
                OperationState.FAILED,
                percent,
                phase,
                f"provider-managed Cilium on {cluster!r} runs {', '.join(versions)}, not the "
                f"bundled {want}; it arrives with the control plane upgrade (upgrade the control "
                "plane first, or check the provider's Cilium version for this release)",
                components,
            )
        return self._report(
            cluster, record, OperationState.RUNNING, percent, phase, components=components
        )

    async def _enable_mesh_progress(
        self, cluster: str, record: _OperationRecord
    ) -> OperationProgress:
        api = await self.clients.member(cluster)
        apiserver = await api.get(
            calls.GET_DEPLOYMENT, CLUSTERMESH_APISERVER, namespace=KUBE_SYSTEM
        )
        if apiserver is None:
            # The chart deploys it once the values are rendered; a stuck render times out.
            return self._report(
                cluster,
                record,
                OperationState.RUNNING,
                10,
                "clustermesh-apiserver not deployed yet",
            )
        rollout = deployment_rollout(apiserver, "apiserver")
        phase = f"clustermesh-apiserver {rollout.ready}/{rollout.desired} ready"
        if not rollout.rolled_out:
            return self._report(
                cluster, record, OperationState.RUNNING, 50, phase, components=[rollout]
            )
        service, nodes = await asyncio.gather(
            api.get(calls.GET_SERVICE, CLUSTERMESH_APISERVER, namespace=KUBE_SYSTEM),
            api.list(calls.LIST_NODES),
        )
        reachable = apiserver_endpoint(cluster, service, nodes)
        if isinstance(reachable, str):
            # Waiting for an address is progress; a Service peers can never reach is not.
            state = (
                OperationState.RUNNING if reachable.startswith("waiting") else OperationState.FAILED
            )
            return self._report(
                cluster,
                record,
                state,
                80,
                f"{phase}; its Service: {reachable}",
                reachable if state is OperationState.FAILED else None,
                components=[rollout],
            )
        return self._report(
            cluster, record, OperationState.SUCCEEDED, 100, phase, components=[rollout]
        )

    async def _cilium_management(
        self, cluster: str, target: MemberTarget
    ) -> tuple[CiliumManagement, KubeObject | None]:
        """How Cilium is managed on the member, and the HelmChartProxy when there is one."""
        proxy: KubeObject | None = None
        if target.cilium in (CiliumManagement.AUTO, CiliumManagement.HELM_CHART_PROXY):
            if target.cluster_api is not None:
                proxy = await self._cilium_chart_proxy(cluster, target)
            if proxy is not None:
                return CiliumManagement.HELM_CHART_PROXY, proxy
            if target.cilium is CiliumManagement.HELM_CHART_PROXY:
                raise CiliumUpgradeNotPossibleError(
                    f"cluster {cluster!r}: no HelmChartProxy for chart 'cilium' selects it"
                )
        if target.cilium is CiliumManagement.PROVIDER_MANAGED:
            return CiliumManagement.PROVIDER_MANAGED, None
        api = await self.clients.member(cluster)
        agent = await api.get(calls.GET_DAEMONSET, CILIUM_AGENT, namespace=KUBE_SYSTEM)
        labels = meta(agent, "labels") if agent else {}
        if any(label in labels for label in PROVIDER_MANAGED_LABELS):
            return CiliumManagement.PROVIDER_MANAGED, None
        raise CiliumUpgradeNotPossibleError(
            f"cluster {cluster!r}: cannot upgrade its Cilium: no Cluster API HelmChartProxy for "
            "chart 'cilium' selects it and its Cilium is not provider-managed (set 'cilium' in "
            "the access file if it is)"
        )

    async def _cilium_chart_proxy(self, cluster: str, target: MemberTarget) -> KubeObject | None:
        assert target.cluster_api is not None
        obj = await self._cluster_object(cluster, target)
        labels = meta(obj, "labels")
        management = await self.clients.management(target.cluster_api.management_context)
        proxies = await management.list(
            calls.LIST_HELM_CHART_PROXIES, namespace=target.cluster_api.namespace
        )
        matching = [
            p
            for p in proxies
            if (p.get("spec") or {}).get("chartName") == "cilium"
            and selector_matches((p.get("spec") or {}).get("clusterSelector"), labels)
        ]
        if len(matching) > 1:
            raise CiliumUpgradeNotPossibleError(
                f"cluster {cluster!r}: several HelmChartProxies install Cilium on it: "
                f"{sorted(_name(p) for p in matching)}"
            )
        return matching[0] if matching else None

    async def _check_helm_chart_proxy(
        self, cluster: str, target: MemberTarget, proxy: KubeObject
    ) -> None:
        """Refuse a version change that would upgrade other members or drop the mesh values."""
        await self._only_this_cluster(cluster, target, proxy)
        peers = await self._configured_peers(cluster)
        in_values = _values_clusters(str((proxy.get("spec") or {}).get("valuesTemplate") or ""))
        missing = sorted(set(peers) - set(in_values)) if in_values is not None else []
        if missing:
            raise CiliumUpgradeNotPossibleError(
                f"cluster {cluster!r}: HelmChartProxy {_name(proxy)} values lack "
                f"clustermesh.config.clusters for {missing}; a Helm upgrade would disconnect "
                "them from the mesh"
            )

    async def _only_this_cluster(
        self, cluster: str, target: MemberTarget, proxy: KubeObject
    ) -> None:
        """Refuse a HelmChartProxy that selects other Clusters too (its values are per member)."""
        assert target.cluster_api is not None
        management = await self.clients.management(target.cluster_api.management_context)
        clusters = await management.list(
            calls.LIST_CLUSTERS, namespace=target.cluster_api.namespace
        )
        selector = (proxy.get("spec") or {}).get("clusterSelector")
        selected = sorted(
            str(c["metadata"]["name"])
            for c in clusters
            if selector_matches(selector, meta(c, "labels"))
        )
        if selected != [target.cluster_api.cluster]:
            raise CiliumUpgradeNotPossibleError(
                f"cluster {cluster!r}: HelmChartProxy {_name(proxy)} selects {selected}; changing "
                "its version would upgrade them all at once. Give each member its own "
                "HelmChartProxy (clusterSelector on cluster.x-k8s.io/cluster-name)"
            )

    # --- global services --------------------------------------------------------------------

    async def list_global_services(self, members: Sequence[str]) -> list[GlobalService]:
        """Services global in at least one member, with per-member state and routing.

        Routing is what the agents' datapath holds, not what meshfleet wrote: each
        member's agents' service tables (``cilium-dbg service list -o json``), their
        *active* backends attributed to members by pod CIDR. A member counts as
        routing to a source while any of its agents still holds an active backend
        of it. Backends of a member whose API is unreachable are marked stale
        (kept by the agents without ``clustermesh-cache-ttl``). A member whose
        tables cannot be read counts as still routing to every source (stale), so
        a drain never finishes on a guess.

        Cost of one call (one poll of a drain or restore wait): per member, four
        list calls and one configmap get, plus one exec per running agent pod,
        at most ``execConcurrency`` (access file, default 8) execs at once across
        all members.
        """
        copies, tables, cidrs = await asyncio.gather(
            asyncio.gather(*(self._service_copies(m) for m in members)),
            asyncio.gather(*(self._service_tables(m) for m in members)),
            asyncio.gather(*(self._pod_cidrs(m) for m in members)),
        )
        by_member = dict(zip(members, copies, strict=True))
        by_viewer = dict(zip(members, tables, strict=True))
        ranges = {m: c for m, c in zip(members, cidrs, strict=True) if c}
        unreachable = {m for m, found in by_member.items() if found is None}
        keys = sorted(
            {k for found in copies if found for k, c in found.items() if c.state.is_global}
        )
        services: list[GlobalService] = []
        for namespace, name in keys:
            states = {
                m: found[(namespace, name)].state
                for m, found in by_member.items()
                if found and (namespace, name) in found
            }
            minimums = [
                c.min_ready
                for found in copies
                if found and (c := found.get((namespace, name))) and c.min_ready is not None
            ]
            services.append(
                GlobalService(
                    namespace=namespace,
                    name=name,
                    min_ready_endpoints=max(minimums) if minimums else None,
                    per_cluster=states,
                    routing={
                        viewer: _agent_routing(
                            viewer,
                            by_viewer[viewer],
                            (namespace, name),
                            ranges,
                            states,
                            unreachable,
                        )
                        for viewer in states
                    },
                )
            )
        return services

    async def _service_tables(self, cluster: str) -> list[ServiceTable] | None:
        """Every running agent pod's service table (None: the member or an agent unreadable)."""
        try:
            api = await self.clients.member(cluster)
            pods = await api.list(
                calls.LIST_PODS, namespace=KUBE_SYSTEM, label_selector=AGENT_SELECTOR
            )
        except ClusterUnavailableError:
            self.clients.forget(cluster)
            return None
        running = _running_agents(pods)
        if not running:
            return None

        async def table(pod: str) -> ServiceTable:
            target = ExecTarget(
                cluster=cluster,
                namespace=KUBE_SYSTEM,
                pod=pod,
                container=AGENT_CONTAINER,
                command=SERVICE_LIST_COMMAND,
            )
            async with self._exec_slots:
                output = await self._exec(api, target)
            return parse_service_table(output)

        found = await asyncio.gather(*(table(p) for p in running), return_exceptions=True)
        tables: list[ServiceTable] = []
        for pod, item in zip(running, found, strict=True):
            if isinstance(item, asyncio.CancelledError):
                raise item
            if isinstance(item, BaseException):
                log.info(
                    "kubernetes.service_table_unreadable",
                    cluster=cluster,
                    pod=pod,
                    error_type=type(item).__name__,
                )
                return None
            tables.append(item)
        return tables

    async def _pod_cidrs(self, cluster: str) -> list[str]:
        """The member's pod CIDRs; the last ones read while it is unreachable (to see its
        backends in the peers' tables as stale)."""
        try:
            api = await self.clients.member(cluster)
            nodes, config = await asyncio.gather(
                api.list(calls.LIST_NODES),
                api.get(calls.GET_CONFIGMAP, CILIUM_CONFIG, namespace=KUBE_SYSTEM),
            )
        except ClusterUnavailableError:
            self.clients.forget(cluster)
            return self._cidrs.get(cluster, [])
        data = {str(k): str(v) for k, v in ((config or {}).get("data") or {}).items()}
        self._cidrs[cluster] = pod_cidrs(nodes, data)
        return self._cidrs[cluster]

    async def _service_copies(self, cluster: str) -> dict[tuple[str, str], _ServiceCopy] | None:
        await self.clients.target(cluster)
        try:
            api = await self.clients.member(cluster)
            namespaces, services, slices = await asyncio.gather(
                api.list(calls.LIST_NAMESPACES),
                api.list(calls.LIST_SERVICES),
                api.list(calls.LIST_ENDPOINT_SLICES),
            )
        except ClusterUnavailableError as error:
            self.clients.forget(cluster)
            log.info("kubernetes.member_unavailable", cluster=cluster, reason=error.reason)
            return None
        ns_annotations = {str(n["metadata"]["name"]): meta(n, "annotations") for n in namespaces}
        by_service: dict[tuple[str, str], list[KubeObject]] = {}
        for item in slices:
            owner = meta(item, "labels").get("kubernetes.io/service-name")
            if owner:
                key = (str(item["metadata"].get("namespace")), owner)
                by_service.setdefault(key, []).append(item)
        found: dict[tuple[str, str], _ServiceCopy] = {}
        for service in services:
            namespace = str(service["metadata"].get("namespace"))
            name = str(service["metadata"]["name"])
            annotations = meta(service, "annotations")
            total, ready = endpoint_counts(by_service.get((namespace, name), []))
            state = ClusterServiceState(
                cluster=cluster,
                annotations=annotations,
                namespace_annotations=ns_annotations.get(namespace, {}),
                ready_endpoints=ready,
                endpoints=total,
            )
            minimum = annotations.get(ANNOTATION_MIN_READY_ENDPOINTS)
            found[(namespace, name)] = _ServiceCopy(
                state, int(minimum) if minimum and minimum.isdigit() else None
            )
        return found

    async def set_service_annotations(
        self,
        cluster: str,
        namespace: str,
        name: str,
        changes: Mapping[str, str | None],
        *,
        idempotency_key: str,
    ) -> AnnotationChange:
        """Set or remove service annotations; a drain records what it replaces (see ``_drain``)."""
        asked = json.dumps(["service", cluster, namespace, name, dict(changes)], sort_keys=True)
        return await self._once(
            idempotency_key,
            asked,
            lambda: self._annotate_service(cluster, namespace, name, changes, idempotency_key),
        )

    async def _annotate_service(
        self,
        cluster: str,
        namespace: str,
        name: str,
        changes: Mapping[str, str | None],
        key: str,
    ) -> AnnotationChange:
        api = await self.clients.member(cluster)
        service = await api.get(calls.GET_SERVICE, name, namespace=namespace)
        if service is None:
            raise NotFoundError(f"cluster {cluster!r}: Service {namespace}/{name} does not exist")
        plan = plan_annotations(meta(service, "annotations"), changes, key)
        await api.merge_patch(
            calls.PATCH_SERVICE,
            name,
            {"metadata": {"annotations": plan.patch}},
            namespace=namespace,
        )
        log.info(
            "kubernetes.service_annotated",
            cluster=cluster,
            service=f"{namespace}/{name}",
            key=key,
            previous=plan.previous,
            current=plan.current,
        )
        return AnnotationChange(
            cluster=cluster,
            namespace=namespace,
            name=name,
            previous=plan.previous,
            current=plan.current,
        )

    async def set_namespace_annotations(
        self,
        cluster: str,
        namespace: str,
        changes: Mapping[str, str | None],
        *,
        idempotency_key: str,
    ) -> AnnotationChange:
        """Set or remove namespace annotations (e.g. ``clustermesh.cilium.io/global``)."""
        asked = json.dumps(["namespace", cluster, namespace, dict(changes)], sort_keys=True)

        async def act() -> AnnotationChange:
            api = await self.clients.member(cluster)
            obj = await api.get(calls.GET_NAMESPACE, namespace)
            if obj is None:
                raise NotFoundError(f"cluster {cluster!r}: Namespace {namespace} does not exist")
            current = meta(obj, "annotations")
            previous = {k: current.get(k) for k in changes}
            await api.merge_patch(
                calls.PATCH_NAMESPACE, namespace, {"metadata": {"annotations": dict(changes)}}
            )
            log.info(
                "kubernetes.namespace_annotated",
                cluster=cluster,
                namespace=namespace,
                key=idempotency_key,
            )
            return AnnotationChange(
                cluster=cluster, namespace=namespace, previous=previous, current=dict(changes)
            )

        return await self._once(idempotency_key, asked, act)

    async def _once(
        self, key: str, asked: str, act: Callable[[], Awaitable[AnnotationChange]]
    ) -> AnnotationChange:
        known = self._remembered.get(key)
        if known is not None:
            if known[0] != asked:
                raise OperationConflictError(f"idempotency key {key!r} was used for another change")
            return known[1]
        result = await act()
        self._remembered[key] = (asked, result)
        while len(self._remembered) > _MAX_REMEMBERED:
            self._remembered.popitem(last=False)
        return result


# --- helpers ------------------------------------------------------------------------------


def _full_version(cluster: str, text: str) -> Version:
    try:
        version = Version.parse(text)
    except ValueError as error:
        raise MeshfleetError(f"cluster {cluster!r}: {error}") from None
    if version.patch is None:
        raise MeshfleetError(
            f"cluster {cluster!r}: target version {text!r} needs a patch number (MAJOR.MINOR.PATCH)"
        )
    return version


def _check_same(
    record: _OperationRecord, cluster: str, kind: OperationKind, target_version: str
) -> None:
    if (
        record.kind is not kind
        or record.target_version != target_version
        or record.extra.get("cluster", cluster) != cluster
    ):
        raise OperationConflictError(
            f"idempotency key {record.key!r} was used for a {record.kind.value} to "
            f"{record.target_version} on {cluster!r}"
        )


def _ref(target: MemberTarget) -> str:
    ref = target.cluster_api
    return f"{ref.namespace}/{ref.cluster}" if ref else target.name


def _name(obj: KubeObject) -> str:
    return str(obj["metadata"]["name"])


def _chart_version(proxy: KubeObject, version: Version) -> str:
    """Keep the HelmChartProxy's own style (``v1.17.9`` or ``1.17.9``)."""
    current = str((proxy.get("spec") or {}).get("version") or "")
    return f"v{version}" if current.startswith("v") else str(version)


def _failure(obj: KubeObject) -> str | None:
    """A Cluster API failure: ``status.failureMessage`` or a condition with severity Error."""
    status = obj.get("status") or {}
    if status.get("failureMessage") or status.get("failureReason"):
        return (
            f"{obj.get('kind', 'object')} failed: {status.get('failureReason') or ''} "
            + str(status.get("failureMessage") or "").strip()
        )
    for item in status.get("conditions") or []:
        if item.get("status") == "False" and item.get("severity") == "Error":
            return (
                f"{obj.get('kind', 'object')} condition {item.get('type')} is False: "
                f"{item.get('reason') or ''} {item.get('message') or ''}".strip()
            )
    return None


def _condition_hint(obj: KubeObject) -> str | None:
    """The first False condition of a Cluster, as a short progress note."""
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("status") == "False":
            text = f"{item.get('type')}: {item.get('reason') or ''} {item.get('message') or ''}"
            return text.strip()
    return None


def _values_clusters(values_template: str) -> list[str] | None:
    """Peer names in ``clustermesh.config.clusters`` of Helm values; None if unreadable."""
    try:
        clusters = read_values(values_template).get(CONFIG_CLUSTERS) or []
    except MeshfleetError:
        return None  # Go templates can make the text unparsable: nothing to compare then.
    if not isinstance(clusters, list):
        return None
    return [str(c.get("name")) for c in clusters if isinstance(c, dict)]


def _running_agents(pods: Sequence[KubeObject]) -> list[str]:
    """Names of the running, not terminating, Cilium agent pods."""
    return sorted(
        str(p["metadata"]["name"])
        for p in pods
        if meta(p, "labels").get("k8s-app") == "cilium"
        and (p.get("status") or {}).get("phase") == "Running"
        and not (p.get("metadata") or {}).get("deletionTimestamp")
    )


def _agent_routing(
    viewer: str,
    tables: Sequence[ServiceTable] | None,
    service: tuple[str, str],
    ranges: Mapping[str, Sequence[str]],
    states: Mapping[str, ClusterServiceState],
    unreachable: set[str],
) -> RoutingView:
    """Where ``viewer``'s agents route ``service``, by the cluster each active backend lives in."""
    if tables is None:
        # Unreadable: assume it still routes wherever endpoints exist (never a false "drained").
        return RoutingView(
            viewer=viewer,
            backends=[
                BackendSource(cluster=c, routable=s.endpoints, ready=0, stale=True)
                for c, s in states.items()
                if s.endpoints
            ],
        )
    routed: dict[str, int] = {}
    for table in tables:
        per_source: dict[str, int] = {}
        for ip in table.get(service, set()):
            source = owner_of(ip, ranges)
            if source is not None:
                per_source[source] = per_source.get(source, 0) + 1
        for source, count in per_source.items():
            routed[source] = max(routed.get(source, 0), count)
    backends = []
    for source, count in sorted(routed.items()):
        stale = source in unreachable
        at_source = states[source].ready_endpoints if source in states else 0
        backends.append(
            BackendSource(
                cluster=source,
                routable=count,
                ready=0 if stale else min(count, at_source),
                stale=stale,
            )
        )
    return RoutingView(viewer=viewer, backends=backends)


def _parse_records(obj: KubeObject, holder: str) -> dict[str, _OperationRecord]:
    """The operation records in the holder's annotation (unreadable: none, with a warning)."""
    text = meta(obj, "annotations").get(ANNOTATION_OPERATIONS)
    records: dict[str, _OperationRecord] = {}
    if text:
        try:
            for key, value in json.loads(text).items():
                records[key] = _OperationRecord.model_validate(value)
        except (ValueError, AttributeError, ValidationError):
            log.warning("kubernetes.operation_records_unreadable", holder=holder)
    return records


def _records_body(records: Mapping[str, _OperationRecord]) -> dict[str, Any]:
    """The merge patch that stores ``records`` (the newest ones) in the holder's annotation."""
    newest = sorted(records.values(), key=lambda r: r.started_at)[-_MAX_RECORDS:]
    text = json.dumps(
        {r.key: r.model_dump(mode="json", by_alias=True, exclude_none=True) for r in newest},
        sort_keys=True,
        separators=(",", ":"),
    )
    return {"metadata": {"annotations": {ANNOTATION_OPERATIONS: text}}}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _int_or_none(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class _ProxyValues:
    """A HelmChartProxy's ``valuesTemplate`` and meshfleet's record of the pre-mesh values."""

    text: str
    record: PreMeshValues | None


def _joined_values(cluster: str, values: _ProxyValues, cluster_id: int) -> _ProxyValues:
    """The member's own mesh values, before it has any peer (a retry changes nothing)."""
    current = read_values(values.text)
    peers = current.get(CONFIG_CLUSTERS) or []
    if values.record is not None and peers and current.get(CLUSTER_ID) != cluster_id:
        raise MeshfleetError(
            f"cluster {cluster!r} is meshed with cluster id {current.get(CLUSTER_ID)}; "
            f"changing it to {cluster_id} would restart every agent and break identities"
        )
    record = values.record or PreMeshValues.capture(values.text)
    text = values.text
    for path, value in (
        (CLUSTER_NAME, cluster),
        (CLUSTER_ID, cluster_id),
        (USE_APISERVER, True),
        (CONFIG_ENABLED, True),
    ):
        if current.get(path) != value:
            text = set_value(text, path, value)
    if not isinstance(current.get(CONFIG_CLUSTERS), list):
        text = set_value(text, CONFIG_CLUSTERS, [])
    return _ProxyValues(text, record)


def _peer_entries(values: _ProxyValues) -> list[dict[str, Any]]:
    found = read_values(values.text).get(CONFIG_CLUSTERS) or []
    return [dict(e) for e in found if isinstance(e, dict)]


def _with_peers(
    cluster: str, values: _ProxyValues, endpoints: Sequence[PeerEndpoint]
) -> _ProxyValues:
    """``clustermesh.config.clusters`` with an up-to-date entry for each of ``endpoints``."""
    if values.record is None:
        raise MeshfleetError(
            f"cluster {cluster!r}: meshfleet has not enabled the mesh in its HelmChartProxy "
            "values (enable_mesh first)"
        )
    fresh = {e.name: e.value() for e in endpoints if e.name != cluster}
    entries = [e for e in _peer_entries(values) if str(e.get("name")) not in fresh]
    entries.extend(fresh.values())
    entries.sort(key=lambda e: str(e.get("name")))
    if entries == _peer_entries(values):
        return values
    return _ProxyValues(set_value(values.text, CONFIG_CLUSTERS, entries), values.record)


def _without_peers(values: _ProxyValues, peers: Sequence[str]) -> _ProxyValues:
    """``clustermesh.config.clusters`` without the entries of ``peers``."""
    current = _peer_entries(values)
    kept = [e for e in current if str(e.get("name")) not in set(peers)]
    if values.record is None or kept == current:
        return values
    return _ProxyValues(set_value(values.text, CONFIG_CLUSTERS, kept), values.record)


def _restored_values(values: _ProxyValues) -> _ProxyValues:
    """The owned values as they were before meshfleet first wrote them."""
    if values.record is None:
        return values
    return _ProxyValues(values.record.restore(values.text), None)
