"""The fleet backend protocol: everything activities may ask of a fleet, and the answers.

Activities act on clusters only through a :class:`FleetBackend`. Two backends
implement it: ``simulated`` (the embedded default, ``activities.backends.simulated``)
and ``kubernetes`` (real clusters over the Kubernetes API). Every method and
model here is expressible over the Kubernetes API and Cilium's status output
(see ``reference/cilium-clustermesh.md``); simulator-only concepts (faults,
simulated time, the audit log) live on the simulated backend's own class.

Conventions every implementation follows:

- Every mutating method takes ``idempotency_key``. Calling it again with the
  same key returns what the first call returned and changes nothing (so a
  retried activity never upgrades twice, and a retried drain returns the
  annotations from *before* the drain). Reusing a key for a different
  operation or cluster raises :class:`OperationConflictError`.
- Membership is tracked by the caller (the network workflow is its source of
  truth). The backend records the network name it was given in
  :meth:`FleetBackend.enable_mesh` (on Kubernetes: a ``meshfleet.io/network``
  label on ``cilium-config``) and reports it in :class:`MemberDescription`, so
  "a cluster belongs to at most one network" can be checked against reality,
  and reports each member's configured peers (``cilium-clustermesh`` Secret).
- A cluster whose API cannot be reached makes mutating calls raise
  :class:`ClusterUnavailableError` (retryable); read calls report it in the
  answer instead (``apiAvailable: false``) so health gates can see it.
- Slow work (upgrades, enabling the mesh) is *started* and then *read*:
  ``start_*`` returns an :class:`OperationProgress` at once; poll it with
  :meth:`FleetBackend.get_operation`.

This module is pure data and rules: no I/O.
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from pydantic import Field

from engine.domain.errors import MeshfleetError, Retry, UnavailableError
from engine.domain.fleet import NetworkMode
from engine.domain.model import DomainModel
from engine.domain.names import MAX_CLUSTER_ID, MIN_CLUSTER_ID, cluster_name_problem
from engine.domain.versions import MIN_MEMBER_KUBERNETES, Version
from engine.domain.windows import MaintenanceWindow

__all__ = [
    "ANNOTATION_NAMESPACE_GLOBAL",
    "ANNOTATION_SERVICE_GLOBAL",
    "ANNOTATION_SERVICE_SHARED",
    "AnnotationChange",
    "BackendSource",
    "ClusterServiceState",
    "ClusterUnavailableError",
    "FailedRule",
    "FleetBackend",
    "GlobalService",
    "JoinCheck",
    "JoinRule",
    "MemberDescription",
    "MemberMeshView",
    "MeshHealth",
    "NotReadyLink",
    "OperationConflictError",
    "OperationInProgressError",
    "OperationKind",
    "OperationProgress",
    "OperationState",
    "RemoteClusterConfig",
    "RemoteClusterStatus",
    "RemoteClusterSynced",
    "RolloutStatus",
    "RoutingView",
    "join_prerequisite_failures",
]

#: Namespace annotation: with ``clustermesh-default-global-namespace: false`` a
#: namespace must carry it (``"true"``) for its services to be global.
ANNOTATION_NAMESPACE_GLOBAL = "clustermesh.cilium.io/global"
#: Service annotation: merge the backends of same-named services in every cluster.
ANNOTATION_SERVICE_GLOBAL = "service.cilium.io/global"
#: Service annotation: ``"false"`` = consume remote backends, export none (a drain).
ANNOTATION_SERVICE_SHARED = "service.cilium.io/shared"


# --- errors -------------------------------------------------------------------------------


class ClusterUnavailableError(UnavailableError):
    """The cluster's API server cannot be reached right now; retrying later may work."""

    retry = Retry.RETRYABLE

    def __init__(self, cluster: str, reason: str = "API server unavailable") -> None:
        self.cluster = cluster
        self.reason = reason
        super().__init__(f"cluster {cluster!r}: {reason}")


class OperationConflictError(MeshfleetError):
    """An idempotency key was reused for a different operation (a bug in the caller)."""

    exit_code = 2
    retry = Retry.NON_RETRYABLE


class OperationInProgressError(MeshfleetError):
    """Another operation of the same kind is still running on the cluster."""

    retry = Retry.NON_RETRYABLE  # the step fails at once instead of waiting for another's

    def __init__(self, cluster: str, kind: OperationKind, running_key: str) -> None:
        self.cluster = cluster
        self.kind = kind
        self.running_key = running_key
        super().__init__(
            f"cluster {cluster!r}: a {kind.value} is already running (key {running_key!r})"
        )


# --- describing a member ------------------------------------------------------------------


class MemberDescription(DomainModel):
    """What a cluster is and runs, as read from it (``describe_member``)."""

    name: str
    kubernetes_version: str
    cilium_version: str
    labels: dict[str, str] = Field(default_factory=dict)
    cluster_id: int | None = None
    pod_cidrs: list[str] = Field(default_factory=list, alias="podCIDRs")
    network_mode: NetworkMode = NetworkMode.FLAT
    #: The Cilium dataplane (ACNS on AKS) is installed.
    acns: bool = True
    #: A ClusterMesh not managed by meshfleet is already configured.
    self_managed_mesh: bool = False
    #: The clustermesh-apiserver and agent mesh config are deployed.
    mesh_enabled: bool = False
    #: The network recorded by ``enable_mesh`` (None when not a member).
    network: str | None = None
    #: Peers this member is configured to connect to (keys of ``cilium-clustermesh``).
    mesh_peers: list[str] = Field(default_factory=list)
    nodes: int = 0
    api_available: bool = True
    healthy: bool = True
    #: Why the cluster is not healthy (None when it is).
    reason: str | None = None
    #: Fleet's member ``group`` (the group a strategy's group matches by name).
    update_group: str | None = None
    #: The member's planned-maintenance window (AKS ``aksManagedAutoUpgradeSchedule``).
    maintenance_window: MaintenanceWindow | None = None


class JoinRule(str, enum.Enum):
    """The membership rules a newcomer must pass (DESIGN.md, "Network membership")."""

    KUBERNETES_VERSION = "kubernetesVersion"
    CILIUM_DATAPLANE = "ciliumDataplane"
    FLAT_NETWORK = "flatNetwork"
    NO_SELF_MANAGED_MESH = "noSelfManagedMesh"
    CLUSTER_NAME = "clusterName"
    CLUSTER_ID = "clusterId"
    POD_CIDRS = "podCIDRs"
    SINGLE_NETWORK = "singleNetwork"
    API_AVAILABLE = "apiAvailable"


class FailedRule(DomainModel):
    """One membership rule the candidate breaks, and why."""

    rule: JoinRule
    message: str


class JoinCheck(DomainModel):
    """The result of checking a candidate against the rules and the current members."""

    cluster: str
    network: str
    failed: list[FailedRule] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the candidate may join."""
        return not self.failed


def join_prerequisite_failures(
    candidate: MemberDescription, network: str, peers: Sequence[MemberDescription]
) -> list[FailedRule]:
    """Every rule ``candidate`` breaks to join ``network`` whose members are ``peers``.

    Shared by all backends: a backend only has to describe the clusters.
    """
    failed: list[FailedRule] = []

    def fail(rule: JoinRule, message: str) -> None:
        failed.append(FailedRule(rule=rule, message=message))

    if not candidate.api_available:
        fail(JoinRule.API_AVAILABLE, candidate.reason or "the cluster's API cannot be reached")
    try:
        minor = Version.parse(candidate.kubernetes_version).minor_version
        if tuple(minor) < MIN_MEMBER_KUBERNETES:
            low = ".".join(str(p) for p in MIN_MEMBER_KUBERNETES)
            fail(
                JoinRule.KUBERNETES_VERSION,
                f"Kubernetes {candidate.kubernetes_version} is older than {low}",
            )
    except ValueError as error:
        fail(JoinRule.KUBERNETES_VERSION, str(error))
    if not candidate.acns:
        fail(JoinRule.CILIUM_DATAPLANE, "the Cilium dataplane (ACNS) is not enabled")
    if candidate.network_mode is not NetworkMode.FLAT:
        fail(
            JoinRule.FLAT_NETWORK,
            f"network mode is {candidate.network_mode.value}; members need a flat network",
        )
    if candidate.self_managed_mesh:
        fail(JoinRule.NO_SELF_MANAGED_MESH, "a self-managed ClusterMesh is already configured")
    problem = cluster_name_problem(candidate.name)
    if problem:
        fail(JoinRule.CLUSTER_NAME, f"cluster name {candidate.name!r} {problem}")
    others = [p for p in peers if p.name != candidate.name]
    if any(p.name == candidate.name for p in peers):
        fail(JoinRule.SINGLE_NETWORK, f"{candidate.name!r} is already a member of {network!r}")
    if candidate.network is not None and candidate.network != network:
        fail(
            JoinRule.SINGLE_NETWORK,
            f"{candidate.name!r} already belongs to network {candidate.network!r}",
        )
    if candidate.cluster_id is None:
        fail(JoinRule.CLUSTER_ID, "the cluster has no cluster id")
    elif not MIN_CLUSTER_ID <= candidate.cluster_id <= MAX_CLUSTER_ID:
        fail(
            JoinRule.CLUSTER_ID,
            f"cluster id {candidate.cluster_id} is outside {MIN_CLUSTER_ID}..{MAX_CLUSTER_ID}",
        )
    else:
        for peer in others:
            if peer.cluster_id == candidate.cluster_id:
                fail(
                    JoinRule.CLUSTER_ID,
                    f"cluster id {candidate.cluster_id} is already used by {peer.name!r}",
                )
    own = [ipaddress.ip_network(c) for c in candidate.pod_cidrs]
    if not own:
        fail(JoinRule.POD_CIDRS, "the cluster reports no pod CIDRs")
    for peer in others:
        for cidr in own:
            for other in peer.pod_cidrs:
                if cidr.overlaps(ipaddress.ip_network(other)):
                    fail(
                        JoinRule.POD_CIDRS,
                        f"pod CIDR {cidr} overlaps {other} of {peer.name!r}",
                    )
    return failed


# --- mesh health (Cilium's RemoteCluster shape) ---------------------------------------------


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


# --- long-running operations --------------------------------------------------------------


class OperationKind(str, enum.Enum):
    CONTROL_PLANE_UPGRADE = "controlPlaneUpgrade"
    CILIUM_UPGRADE = "ciliumUpgrade"
    ENABLE_MESH = "enableMesh"


class OperationState(str, enum.Enum):
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class OperationProgress(DomainModel):
    """A started operation as last observed; poll ``get_operation`` until it is done."""

    key: str
    cluster: str
    kind: OperationKind
    state: OperationState
    target_version: str | None = None
    percent: int = Field(default=0, ge=0, le=100)
    phase: str = ""
    message: str | None = None
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    #: For Cilium upgrades: agent DaemonSet, operator, clustermesh-apiserver.
    components: list[RolloutStatus] = Field(default_factory=list)

    @property
    def done(self) -> bool:
        """Succeeded or failed: nothing more will change."""
        return self.state is not OperationState.RUNNING


# --- global services ----------------------------------------------------------------------


class ClusterServiceState(DomainModel):
    """One cluster's copy of a global service: its annotations and its own endpoints."""

    cluster: str
    annotations: dict[str, str] = Field(default_factory=dict)
    namespace_annotations: dict[str, str] = Field(default_factory=dict)
    ready_endpoints: int = 0
    endpoints: int = 0

    @property
    def is_global(self) -> bool:
        """Global only with both annotations (``clustermesh-default-global-namespace: false``)."""
        return (
            self.namespace_annotations.get(ANNOTATION_NAMESPACE_GLOBAL) == "true"
            and self.annotations.get(ANNOTATION_SERVICE_GLOBAL) == "true"
        )

    @property
    def shared(self) -> bool:
        """Exports its backends (``service.cilium.io/shared`` is not ``"false"``)."""
        return self.annotations.get(ANNOTATION_SERVICE_SHARED, "true") != "false"


class BackendSource(DomainModel):
    """The backends from one source cluster in one viewer's service table."""

    cluster: str
    #: Backends in the viewer's table (what it would route to).
    routable: int
    #: Of those, how many are ready at the source and reachable from the viewer now.
    ready: int
    #: The viewer lost its link to the source: these entries are last-known (no cache TTL).
    stale: bool = False


class RoutingView(DomainModel):
    """Where one cluster currently routes a global service (local backends included)."""

    viewer: str
    backends: list[BackendSource] = Field(default_factory=list)

    @property
    def routable(self) -> int:
        """Backends the viewer would route to."""
        return sum(b.routable for b in self.backends)

    @property
    def ready_routable(self) -> int:
        """Backends the viewer routes to that would actually answer."""
        return sum(b.ready for b in self.backends)

    def from_cluster(self, cluster: str) -> BackendSource | None:
        """The entry for backends living in ``cluster``."""
        return next((b for b in self.backends if b.cluster == cluster), None)


class GlobalService(DomainModel):
    """A global service across the fleet: per-cluster state and each cluster's routing view."""

    namespace: str
    name: str
    #: Required ready endpoints from every viewpoint (Kubernetes backend: the
    #: ``meshfleet.io/min-ready-endpoints`` service annotation); None = not declared.
    min_ready_endpoints: int | None = None
    per_cluster: dict[str, ClusterServiceState] = Field(default_factory=dict)
    routing: dict[str, RoutingView] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"


class AnnotationChange(DomainModel):
    """What a set of annotations was before and after a change.

    Restoring is another ``set_*_annotations`` call with ``previous`` (``None``
    values remove a key that did not exist before).
    """

    cluster: str
    namespace: str
    name: str | None = None
    previous: dict[str, str | None]
    current: dict[str, str | None]


# --- the protocol -------------------------------------------------------------------------


@runtime_checkable
class FleetBackend(Protocol):
    """Everything activities may ask of a fleet. All methods are coroutines."""

    async def describe_member(self, cluster: str) -> MemberDescription:
        """What ``cluster`` is and runs. Raises NotFoundError for an unknown cluster."""
        ...

    async def check_join_prerequisites(
        self, cluster: str, network: str, members: Sequence[str]
    ) -> JoinCheck:
        """Check ``cluster`` against the membership rules for ``network`` with ``members``."""
        ...

    async def mesh_health(self, members: Sequence[str], *, focus: str | None = None) -> MeshHealth:
        """How each of ``members`` sees each of the others (each expects all the others).

        With ``focus`` (one of ``members``), only the links from or to it are read:
        its own view in full, and each other member's entry for it — what checking
        one member needs, at a cost that grows with the members, not their square.
        """
        ...

    async def not_ready_links(
        self, members: Sequence[str], *, focus: str | None = None
    ) -> list[NotReadyLink]:
        """``(await mesh_health(members, focus=focus)).not_ready_links()``: what the built-in
        mesh gate and a member's verify step ask. A backend may answer it without building
        every link's status (a full mesh of 255 members has 64,770 links)."""
        ...

    async def enable_mesh(
        self,
        cluster: str,
        *,
        network: str,
        idempotency_key: str,
        cluster_id: int | None = None,
    ) -> OperationProgress:
        """Deploy the clustermesh-apiserver and agent mesh config, recording ``network``.

        ``cluster_id`` is the network's allocation for the cluster (None: keep its own).
        """
        ...

    async def disable_mesh(self, cluster: str, *, idempotency_key: str) -> None:
        """Remove the mesh components and the network record (the reverse of enabling)."""
        ...

    async def connect_peers(
        self, cluster: str, peers: Sequence[str], *, idempotency_key: str
    ) -> None:
        """Configure ``cluster``'s agents to connect to ``peers`` (one direction)."""
        ...

    async def disconnect_peers(
        self, cluster: str, peers: Sequence[str], *, idempotency_key: str
    ) -> None:
        """Remove ``peers`` from ``cluster``'s mesh configuration (one direction)."""
        ...

    async def target_problem(
        self, cluster: str, kubernetes_version: str, cilium_version: str
    ) -> str | None:
        """Why ``cluster`` cannot be upgraded to exactly these versions (None: it can).

        Asked at preflight, before the member is drained: a target the upgrade
        steps would refuse is refused here, while nothing is touched yet.
        """
        ...

    async def start_control_plane_upgrade(
        self, cluster: str, target_version: str, *, idempotency_key: str
    ) -> OperationProgress:
        """Start upgrading the control plane to ``target_version``."""
        ...

    async def start_cilium_upgrade(
        self, cluster: str, target_version: str, *, idempotency_key: str
    ) -> OperationProgress:
        """Start the bundled Cilium upgrade (agent, operator, clustermesh-apiserver)."""
        ...

    async def get_operation(self, cluster: str, idempotency_key: str) -> OperationProgress:
        """The operation started with ``idempotency_key``. NotFoundError if none."""
        ...

    async def list_global_services(self, members: Sequence[str]) -> list[GlobalService]:
        """Services global in at least one of ``members``, with each member's routing view."""
        ...

    async def set_service_annotations(
        self,
        cluster: str,
        namespace: str,
        name: str,
        changes: Mapping[str, str | None],
        *,
        idempotency_key: str,
    ) -> AnnotationChange:
        """Set (or, with None, remove) service annotations; returns before and after."""
        ...

    async def set_namespace_annotations(
        self,
        cluster: str,
        namespace: str,
        changes: Mapping[str, str | None],
        *,
        idempotency_key: str,
    ) -> AnnotationChange:
        """Set (or, with None, remove) namespace annotations; returns before and after."""
        ...
