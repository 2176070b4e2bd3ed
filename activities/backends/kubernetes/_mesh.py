"""Cilium on the members: the mesh configuration (joining, leaving, peers) and Cilium upgrades.

On a member whose Cilium a HelmChartProxy installs (CAAPH), joining and leaving
are Helm values: meshfleet owns cluster.name, cluster.id, clustermesh.useAPIServer,
clustermesh.config.enabled and clustermesh.config.clusters in that member's own
HelmChartProxy ``valuesTemplate`` (see ``_values``), and the chart renders the
clustermesh-apiserver and the connection Secrets from them. Members configured
with connection Secrets get their entries written directly. Other members are
checked, not configured: their Cilium install must list the peers itself.

Upgrading the bundled Cilium patches the member's HelmChartProxy version, or
verifies that the provider did it (provider-managed Cilium).

Does I/O (Kubernetes API calls).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from activities.backends.kubernetes import _api as calls
from activities.backends.kubernetes._access import CiliumManagement, MemberTarget, MeshConfig
from activities.backends.kubernetes._api import (
    CILIUM_AGENT,
    CILIUM_CONFIG,
    CLUSTERMESH_APISERVER,
    CLUSTERMESH_SECRET,
    KUBE_SYSTEM,
    KVSTOREMESH_SECRET,
    REMOTE_CERT_SECRET,
    SERVER_CERT_SECRET,
    ClusterApi,
    KubeObject,
)
from activities.backends.kubernetes._base import LABEL_NETWORK
from activities.backends.kubernetes._objects import (
    apiserver_endpoint,
    connection_config,
    mesh_peers,
    meta,
    selector_matches,
)
from activities.backends.kubernetes._operations import OperationTracking, check_same, full_version
from activities.backends.kubernetes._values import (
    ANNOTATION_PRE_MESH_VALUES,
    PeerEndpoint,
    PreMeshValues,
    ProxyValues,
    joined_values,
    restored_values,
    values_clusters,
    with_peers,
    without_peers,
)
from engine.domain.backend import ClusterUnavailableError, OperationKind, OperationProgress
from engine.domain.errors import MeshfleetError
from engine.domain.names import MAX_CLUSTER_ID, MIN_CLUSTER_ID
from engine.domain.versions import Version

log = structlog.get_logger(__name__)


#: With KVStoreMesh, the agents' entry for every peer: the local kvstoremesh.
LOCAL_KVSTOREMESH_CONFIG = (
    "endpoints:\n- https://clustermesh-apiserver.kube-system.svc:2379\n"
    "trusted-ca-file: /var/lib/cilium/clustermesh/local-etcd-client-ca.crt\n"
    "key-file: /var/lib/cilium/clustermesh/local-etcd-client.key\n"
    "cert-file: /var/lib/cilium/clustermesh/local-etcd-client.crt\n"
)
#: Agent DaemonSet labels that mean the cloud provider installs and upgrades Cilium.
PROVIDER_MANAGED_LABELS = ("kubernetes.azure.com/managedby", "addonmanager.kubernetes.io/mode")


class CiliumUpgradeNotPossibleError(MeshfleetError):
    """The member's bundled Cilium cannot be upgraded (or verified) by meshfleet."""


class CiliumMesh(OperationTracking):
    """Joining and leaving the mesh, connecting peers, and upgrading Cilium."""

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
                cluster, target, lambda values: joined_values(cluster, values, chosen)
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
            await self._write_mesh_values(cluster, target, restored_values)
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
                cluster, target, lambda values: with_peers(cluster, values, endpoints)
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
                cluster, target, lambda values: without_peers(values, peers)
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
        change: Callable[[ProxyValues], ProxyValues],
    ) -> None:
        """Rewrite the owned values of ``cluster``'s HelmChartProxy on the version read."""
        assert target.cluster_api is not None
        management = await self.clients.management(target.cluster_api.management_context)
        proxy = await self._cilium_chart_proxy(cluster, target)
        assert proxy is not None

        def patch(current: KubeObject) -> dict[str, Any] | None:
            text = str((current.get("spec") or {}).get("valuesTemplate") or "")
            before = ProxyValues(text, PreMeshValues.read(meta(current, "annotations")))
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

    async def start_cilium_upgrade(
        self, cluster: str, target_version: str, *, idempotency_key: str
    ) -> OperationProgress:
        """Upgrade the bundled Cilium (HelmChartProxy) or verify the provider did it."""
        version = full_version(cluster, target_version)
        target = await self.clients.target(cluster)
        holder = await self._holder(cluster)
        existing = (await self._records(holder))[1].get(idempotency_key)
        if existing is not None:
            check_same(existing, cluster, OperationKind.CILIUM_UPGRADE, str(version))
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
        in_values = values_clusters(str((proxy.get("spec") or {}).get("valuesTemplate") or ""))
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


# --- helpers ------------------------------------------------------------------------------


def _name(obj: KubeObject) -> str:
    return str(obj["metadata"]["name"])


def _chart_version(proxy: KubeObject, version: Version) -> str:
    """Keep the HelmChartProxy's own style (``v1.17.9`` or ``1.17.9``)."""
    current = str((proxy.get("spec") or {}).get("version") or "")
    return f"v{version}" if current.startswith("v") else str(version)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _int_or_none(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None
