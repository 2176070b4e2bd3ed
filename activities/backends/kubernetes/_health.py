"""Describing members and the mesh's health, as the clusters and their Cilium agents report it.

``describe_member`` reads a member's API (version, nodes, Cilium's objects);
``mesh_health`` asks every running agent ``cilium-dbg status -o json`` through
the injectable :class:`~._exec.PodExec`.

Does I/O (Kubernetes API calls, execs in agent pods).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog
from pydantic import ValidationError

from activities.backends.kubernetes import _api as calls
from activities.backends.kubernetes._api import (
    CILIUM_AGENT,
    CILIUM_CONFIG,
    CLUSTERMESH_APISERVER,
    CLUSTERMESH_SECRET,
    KUBE_SYSTEM,
    ClusterApi,
)
from activities.backends.kubernetes._base import (
    AGENT_CONTAINER,
    AGENT_SELECTOR,
    LABEL_NETWORK,
    BackendState,
    now,
    running_agents,
)
from activities.backends.kubernetes._exec import AGENT_STATUS_COMMAND, ExecTarget
from activities.backends.kubernetes._objects import (
    daemonset_rollout,
    deployment_rollout,
    kubernetes_version,
    merge_agent_views,
    mesh_peers,
    meta,
    network_mode,
    node_ready,
    parse_agent_status,
    pod_cidrs,
)
from engine.domain.backend import ClusterUnavailableError
from engine.domain.membership import JoinCheck, MemberDescription, join_prerequisite_failures
from engine.domain.mesh import MemberMeshView, MeshHealth, NotReadyLink, RemoteClusterStatus

log = structlog.get_logger(__name__)


class MemberHealth(BackendState):
    """The backend's reading side: what members are, whether they may join, how the mesh is."""

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
        return MeshHealth(observed_at=now(), members=list(views), focus=focus)

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
        running = running_agents(pods)
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
