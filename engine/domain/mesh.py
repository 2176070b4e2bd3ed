"""Mesh health: how each member's Cilium agents see every peer, and when that is healthy.

The models follow Cilium's ``RemoteCluster`` status (``cilium-dbg status``,
``cilium clustermesh status``); :meth:`MeshHealth.healthy` and
:func:`view_problems` are the engine's built-in mesh gate, and the reasons
they give are worded as ``cilium clustermesh status`` words them.

Pure data and rules: no I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from pydantic import Field

from engine.domain.model import DomainModel

__all__ = [
    "REASON_CONFIG_NOT_FOUND",
    "REASON_CONFIG_UNKNOWN",
    "REASON_FAILURES_GREW",
    "REASON_MISSING",
    "REASON_SYNC_IN_PROGRESS",
    "REASON_SYNC_UNKNOWN",
    "MemberMeshView",
    "MeshHealth",
    "NotReadyLink",
    "RemoteClusterConfig",
    "RemoteClusterStatus",
    "RemoteClusterSynced",
    "RolloutStatus",
    "view_problems",
]


class RemoteClusterConfig(DomainModel):
    """``RemoteCluster.config``: the remote cluster's configuration as retrieved."""

    cluster_id: int | None = None
    kvstoremesh: bool = False
    required: bool = False
    retrieved: bool = False
    sync_canaries: bool = False
    service_exports_enabled: bool | None = None


class RemoteClusterSynced(DomainModel):
    """``RemoteCluster.synced``; ``None`` = not reported (the resource is not exported)."""

    nodes: bool = False
    endpoints: bool = False
    identities: bool = False
    services: bool = False
    endpoint_slices: bool | None = None
    service_exports: bool | None = None

    @property
    def all(self) -> bool:
        """Every reported resource kind is synchronized."""
        # One expression, no generators: the mesh gate asks this of every link (N² of them).
        return (
            self.nodes
            and self.endpoints
            and self.identities
            and self.services
            and self.endpoint_slices is not False
            and self.service_exports is not False
        )


#: ``cilium clustermesh status`` explanations, in the order it checks them.
REASON_CONFIG_UNKNOWN = "configuration retrieval status unknown"


REASON_CONFIG_NOT_FOUND = "remote cluster configuration required but not found"


REASON_SYNC_UNKNOWN = "synchronization status unknown"


REASON_SYNC_IN_PROGRESS = "synchronization in progress"


REASON_MISSING = "remote cluster not in the agent's list (not configured or not yet seen)"


REASON_FAILURES_GREW = "num-failures grew since the last check"


class RemoteClusterStatus(DomainModel):
    """One peer as one member's agents see it (Cilium's ``RemoteCluster``)."""

    name: str
    ready: bool = False
    connected: bool = False
    status: str = ""
    num_nodes: int = 0
    num_endpoints: int = 0
    num_identities: int = 0
    num_shared_services: int = 0
    num_failures: int = 0
    last_failure: dt.datetime | None = None
    config: RemoteClusterConfig | None = None
    synced: RemoteClusterSynced | None = None

    @property
    def fully_ready(self) -> bool:
        """The engine's bar: ready, connected, configuration retrieved, everything synced."""
        return (
            self.ready
            and self.connected
            and self.config is not None
            and self.config.retrieved
            and self.synced is not None
            and self.synced.all
        )

    def not_ready_reason(self) -> str | None:
        """Why this peer is not fully ready, as ``cilium clustermesh status`` words it."""
        if self.fully_ready:
            return None
        if not self.connected:
            return self.status or "not connected"
        if self.config is None:
            return REASON_CONFIG_UNKNOWN
        if self.config.required and not self.config.retrieved:
            return REASON_CONFIG_NOT_FOUND
        if self.synced is None:
            return REASON_SYNC_UNKNOWN
        if not self.config.retrieved:
            return "remote cluster configuration not retrieved"
        return REASON_SYNC_IN_PROGRESS


class RolloutStatus(DomainModel):
    """A Deployment's or DaemonSet's rollout (agent, operator, clustermesh-apiserver)."""

    name: str
    kind: str = "Deployment"
    version: str | None = None
    desired: int = 0
    updated: int = 0
    ready: int = 0

    @property
    def rolled_out(self) -> bool:
        """Every replica runs the new spec and is ready."""
        return self.updated >= self.desired and self.ready >= self.desired


class MemberMeshView(DomainModel):
    """One member's side of the mesh: its components and how it sees each peer."""

    cluster: str
    api_available: bool = True
    #: Why the view could not be read (API down, mesh not enabled), else None.
    error: str | None = None
    agent: RolloutStatus | None = None
    clustermesh_apiserver: RolloutStatus | None = None
    remote_clusters: list[RemoteClusterStatus] = Field(default_factory=list)

    def remote(self, name: str) -> RemoteClusterStatus | None:
        """This member's entry for peer ``name``, if listed."""
        return next((r for r in self.remote_clusters if r.name == name), None)


class NotReadyLink(DomainModel):
    """A directed link ``viewer -> peer`` that is not fully ready, and why."""

    viewer: str
    peer: str
    reason: str


def _first_by_name(remotes: list[RemoteClusterStatus]) -> dict[str, RemoteClusterStatus]:
    """Remote clusters by name, the first of each name (as ``MemberMeshView.remote``)."""
    found: dict[str, RemoteClusterStatus] = {}
    for remote in remotes:
        found.setdefault(remote.name, remote)
    return found


class MeshHealth(DomainModel):
    """The mesh seen from every member; ``healthy()`` is the engine's mesh gate."""

    observed_at: dt.datetime
    members: list[MemberMeshView]
    #: Set when read with a focus: only links from or to this member were read.
    focus: str | None = None

    def view(self, cluster: str) -> MemberMeshView | None:
        """The view of one member."""
        return next((m for m in self.members if m.cluster == cluster), None)

    def not_ready_links(self, previous: MeshHealth | None = None) -> list[NotReadyLink]:
        """Every problem, viewer by viewer, each explained in ``cilium clustermesh status`` order.

        Every member expects every other member of this view (with ``focus``, the
        focus expects every other member and the others expect only the focus).
        With ``previous``, a link whose ``numFailures`` grew since then is reported too.
        """
        names = [m.cluster for m in self.members]
        found: list[NotReadyLink] = []
        for member in self.members:
            expected = names if self.focus in (None, member.cluster) else [self.focus]
            before = previous.view(member.cluster) if previous else None
            found += view_problems(member, expected, before)
        return found

    def healthy(self, previous: MeshHealth | None = None) -> bool:
        """Mesh healthy: components rolled out, every link fully ready, no new failures."""
        return not self.not_ready_links(previous)


def view_problems(
    member: MemberMeshView, expected: Iterable[str], before: MemberMeshView | None = None
) -> list[NotReadyLink]:
    """What keeps one member's view from healthy: it cannot be read, its mesh components
    are not rolled out, or a link to one of the ``expected`` peers is missing or not fully
    ready (with ``before``, also a link whose ``numFailures`` grew since then)."""
    if not member.api_available or member.error:
        return [
            NotReadyLink(
                viewer=member.cluster, peer="*", reason=member.error or "API server unavailable"
            )
        ]
    found: list[NotReadyLink] = []
    for name, component in (
        ("agent", member.agent),
        ("clustermesh-apiserver", member.clustermesh_apiserver),
    ):
        if component is not None and not component.rolled_out:
            found.append(
                NotReadyLink(
                    viewer=member.cluster,
                    peer="*",
                    reason=f"{name} not rolled out ({component.ready}/"
                    f"{component.desired} ready, {component.updated} updated)",
                )
            )
    # Indexed once per member (``remote()`` per peer made this cubic in the members).
    remotes = _first_by_name(member.remote_clusters)
    old_remotes = _first_by_name(before.remote_clusters) if before else {}
    for peer in expected:
        if peer == member.cluster:
            continue
        remote = remotes.get(peer)
        if remote is None:
            found.append(NotReadyLink(viewer=member.cluster, peer=peer, reason=REASON_MISSING))
            continue
        reason = remote.not_ready_reason()
        if reason is None and before is not None:
            old = old_remotes.get(peer)
            if old is not None and remote.num_failures > old.num_failures:
                reason = REASON_FAILURES_GREW
        if reason is not None:
            found.append(NotReadyLink(viewer=member.cluster, peer=peer, reason=reason))
    return found
