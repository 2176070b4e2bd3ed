"""The simulated world as a lazily advanced discrete-event model (pure: no I/O, no clock).

Nothing runs in the background: the world is a document (``World``) that
stores *when* things will change (operation completions, agent restarts
ending, propagation delays elapsing, fault windows closing) as scheduled
events. Every access first advances it to "now" with :meth:`Simulation.advance`,
applying the scheduled transitions in time order and running the continuity
monitor at each transition point. Between transition points nothing changes,
so checking there is exact: a violation is recorded at the simulated time it
happened even if nobody was looking then.

Time is simulated seconds since the fleet was loaded (``simTime``). The
caller maps wall time to simulated time (``timeScale`` real seconds per
simulated second); with ``timeScale`` 0 the caller advances to infinity, so
every pending transition is applied at once.
"""

from __future__ import annotations

import bisect
import datetime as dt
import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from pydantic import Field

from engine.domain.backend import (
    ClusterUnavailableError,
    OperationConflictError,
    OperationInProgressError,
    OperationKind,
    OperationProgress,
    OperationState,
)
from engine.domain.drain import plan_annotations
from engine.domain.errors import NotFoundError
from engine.domain.fleet import (
    Fault,
    FaultKind,
    FaultTrigger,
    GlobalServiceSpec,
    SimulatedCluster,
    SimulatedFleet,
)
from engine.domain.membership import MemberDescription
from engine.domain.mesh import (
    MemberMeshView,
    MeshHealth,
    NotReadyLink,
    RemoteClusterConfig,
    RemoteClusterStatus,
    RemoteClusterSynced,
    RolloutStatus,
    view_problems,
)
from engine.domain.model import DomainModel
from engine.domain.services import (
    ANNOTATION_NAMESPACE_GLOBAL,
    ANNOTATION_SERVICE_GLOBAL,
    ANNOTATION_SERVICE_SHARED,
    AnnotationChange,
    BackendSource,
    ClusterServiceState,
    GlobalService,
    RoutingView,
)
from engine.domain.versions import Version

#: How long the API server is unavailable during a control-plane upgrade (simulated s).
API_BLIP_SECONDS = 30.0
#: Where in an upgrade the disruptive moment falls (fraction of its duration).
API_BLIP_AT = 0.5
AGENT_RESTART_AT = 0.25

STATUS_WAITING = "Waiting for initial connection to be established"
STATUS_PARTITIONED = "etcd: 0/1 connected: context deadline exceeded (connection lost)"


class AuditEvent(str, enum.Enum):
    """The audit log's event names (the ground truth tests and reports read)."""

    MEMBER_JOINED = "memberJoined"
    MEMBER_REMOVED = "memberRemoved"
    MESH_CONNECTED = "meshConnected"
    MESH_DISCONNECTED = "meshDisconnected"
    CONTROL_PLANE_UPGRADE_STARTED = "controlPlaneUpgradeStarted"
    CONTROL_PLANE_UPGRADE_COMPLETED = "controlPlaneUpgradeCompleted"
    CONTROL_PLANE_UPGRADE_FAILED = "controlPlaneUpgradeFailed"
    CILIUM_UPGRADE_STARTED = "ciliumUpgradeStarted"
    CILIUM_UPGRADE_COMPLETED = "ciliumUpgradeCompleted"
    CILIUM_UPGRADE_FAILED = "ciliumUpgradeFailed"
    SERVICE_DRAINED = "serviceDrained"
    SERVICE_RESTORED = "serviceRestored"
    ANNOTATIONS_CHANGED = "annotationsChanged"
    FAULT_INJECTED = "faultInjected"
    VIOLATION = "violation"


class AuditEntry(DomainModel):
    """One audit-log entry: ``{"at", "simTime", "cluster", "event", "details"}``."""

    #: Position in the log (for ``--follow`` and paging); not part of the JSON form.
    seq: int = Field(default=0, exclude=True)
    at: dt.datetime
    sim_time: float
    cluster: str | None
    event: AuditEvent
    details: dict[str, Any] = Field(default_factory=dict)

    def to_json_dict(self) -> dict[str, object]:
        """The documented shape; ``cluster`` is kept (null for fleet-wide entries)."""
        return self.model_dump(mode="json", by_alias=True)


class ConditionKind(str, enum.Enum):
    """Timed conditions that disturb a member while they last."""

    AGENT_RESTART = "agentRestart"
    MESH_PARTITION = "meshPartition"
    ENDPOINTS_LOST = "endpointsLost"
    API_UNAVAILABLE = "apiUnavailable"


#: The conditions that disturb a cluster's mesh links.
_LINK_CONDITIONS = frozenset({ConditionKind.AGENT_RESTART, ConditionKind.MESH_PARTITION})


class Condition(DomainModel):
    """A disturbance on ``cluster`` during ``[start, end)`` (``end`` None: until cleared)."""

    id: int
    kind: ConditionKind
    cluster: str
    start: float
    end: float | None = None
    peers: list[str] | None = None
    service: str | None = None
    fault_id: int | None = None
    operation: str | None = None

    def active(self, t: float) -> bool:
        return self.start <= t and (self.end is None or t < self.end)


class FaultRecord(DomainModel):
    """A fault declared in the fleet file or injected at run time."""

    id: int
    cluster: str
    fault: Fault
    remaining: int
    #: Operation faults fired by ``afterUpgrade``/``atSimTime`` wait for the next operation.
    armed: bool = False
    cleared: bool = False
    injected: bool = False


class SimOperation(DomainModel):
    """A long-running operation and its timeline in simulated seconds."""

    key: str
    cluster: str
    kind: OperationKind
    target_version: str | None = None
    network: str | None = None
    state: OperationState = OperationState.RUNNING
    started: float
    duration: float = 0.0
    #: When it will complete; None while hung.
    finish_at: float | None = None
    finished: float | None = None
    message: str | None = None
    phase: str = ""
    restart_window: list[float] | None = None
    hung_by: int | None = None
    #: Where the current timeline began (the start, or when a hang was cleared).
    planned_from: float | None = None


class IdempotencyRecord(DomainModel):
    kind: str
    cluster: str
    result: dict[str, Any] | None = None


class Scheduled(DomainModel):
    """A transition due at ``at`` (ties broken by ``seq``, the order of scheduling)."""

    at: float
    seq: int
    kind: str
    data: dict[str, Any] = Field(default_factory=dict)


class ViolationRecord(DomainModel):
    """A continuity violation: from ``viewpoint``, ``service`` had too few endpoints."""

    service: str
    viewpoint: str
    min_ready_endpoints: int
    #: The lowest count of ready, routable endpoints seen while it lasted.
    ready_routable: int
    routable: int
    started: float
    ended: float | None = None


class ClusterState(DomainModel):
    """A cluster's mutable state; ``spec`` keeps what the fleet file said."""

    spec: SimulatedCluster
    kubernetes_version: str
    cilium_version: str
    network: str | None = None
    mesh_enabled_at: float | None = None
    #: Configured peers and when they were configured.
    peers: dict[str, float] = Field(default_factory=dict)
    service_annotations: dict[str, dict[str, str]] = Field(default_factory=dict)
    namespace_annotations: dict[str, dict[str, str]] = Field(default_factory=dict)


class World(DomainModel):
    """Everything the simulation knows; stored as one document."""

    fleet: SimulatedFleet
    loaded_wall: float
    now: float = 0.0
    next_id: int = 1
    clusters: dict[str, ClusterState] = Field(default_factory=dict)
    operations: dict[str, SimOperation] = Field(default_factory=dict)
    idempotency: dict[str, IdempotencyRecord] = Field(default_factory=dict)
    faults: list[FaultRecord] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    events: list[Scheduled] = Field(default_factory=list)
    #: "cluster|ns/name" -> the backends the cluster exports now.
    exports: dict[str, int] = Field(default_factory=dict)
    #: service -> viewer -> source -> [backends, as of]: each viewer's last-known
    #: backends from each source (no cache TTL: kept while the source is unreachable).
    #: Only the service's declared clusters are sources: no other can ever export it.
    cache: dict[str, dict[str, dict[str, list[float]]]] = Field(default_factory=dict)
    #: "viewer|peer" links that were ready at the last transition point (a set: a full
    #: mesh of 255 has 64,770 of them, and every access reads it).
    links_ready: set[str] = Field(default_factory=set)
    violations: list[ViolationRecord] = Field(default_factory=list)

    @property
    def time_scale(self) -> float:
        return self.fleet.spec.time_scale


def service_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


#: Synchronization flags of a converged link (True) and of one still syncing (False).
_SYNCED = {
    ready: RemoteClusterSynced(nodes=ready, endpoints=ready, identities=ready, services=ready)
    for ready in (True, False)
}


class _Counts(NamedTuple):
    routable: int
    ready_routable: int


class _Instant:
    """The disturbances active at one instant, indexed for the hot paths."""

    __slots__ = ("api_down", "cut", "cut_off", "disturbed", "lost", "ready", "restarting", "t")

    def __init__(self, t: float, conditions: Iterable[Condition]) -> None:
        self.t = t
        self.restarting: set[str] = set()
        self.api_down: set[str] = set()
        #: Partitioned from every peer.
        self.cut_off: set[str] = set()
        #: Partitioned from the listed peers.
        self.cut: dict[str, set[str]] = {}
        #: Services (None = all) whose endpoints are lost, per cluster.
        self.lost: dict[str, set[str | None]] = {}
        #: Memo of ready endpoints: service -> cluster -> count.
        self.ready: dict[str, dict[str, int]] = {}
        #: Memo of each cluster's past disturbances of its links (see ``Simulation._disturbed``).
        self.disturbed: dict[str, tuple[int, float | None, bool]] = {}
        for c in conditions:
            if not c.active(t):
                continue
            if c.kind is ConditionKind.AGENT_RESTART:
                self.restarting.add(c.cluster)
            elif c.kind is ConditionKind.API_UNAVAILABLE:
                self.api_down.add(c.cluster)
            elif c.kind is ConditionKind.ENDPOINTS_LOST:
                self.lost.setdefault(c.cluster, set()).add(c.service)
            elif c.peers is None:
                self.cut_off.add(c.cluster)
            else:
                self.cut.setdefault(c.cluster, set()).update(c.peers)


class _Link:
    """A directed link's state at one instant (derived, never stored)."""

    __slots__ = ("connected", "failures", "last_failure", "phase", "ready", "status")

    def __init__(self) -> None:
        self.ready = False
        self.connected = False
        self.phase = "waiting"
        self.status = STATUS_WAITING
        self.failures = 0
        self.last_failure: float | None = None


class Simulation:
    """Reads and changes a :class:`World`; collects the audit entries it produces.

    ``wall`` is the wall-clock time of this access (seconds since the epoch),
    used only to stamp audit entries when ``timeScale`` is 0.
    """

    def __init__(self, world: World, wall: float) -> None:
        self.world = world
        self.wall = wall
        self.audit: list[AuditEntry] = []
        #: The world's own set, changed in place (copying it per access cost more than the rest).
        self._links_ready = world.links_ready
        self._by_cluster: dict[str, list[Condition]] | None = None
        self._instant: _Instant | None = None
        self._specs = {
            service_key(s.namespace, s.name): s for s in world.fleet.spec.global_services
        }
        self._config_changed = False
        self._configs: dict[str, RemoteClusterConfig] = {}
        #: How long a change takes to cross the mesh (simulated seconds).
        self._propagation = world.fleet.spec.durations.mesh_propagation.total_seconds()
        #: Clusters whose links may have changed since the last settle (None: all).
        self._dirty: set[str] | None = set()
        #: cluster -> its running Cilium upgrade (built on first use; None = not built).
        self._cilium_running: dict[str, SimOperation] | None = None
        #: Ready links' statuses by (peer, failures, last failure), shared by viewers.
        self._ready_remote: dict[tuple[str, int, float | None], RemoteClusterStatus] = {}

    # --- loading -----------------------------------------------------------------------

    @classmethod
    def load(cls, fleet: SimulatedFleet, wall: float) -> Simulation:
        """A fresh world from a fleet file: declared networks are already converged."""
        world = World(fleet=fleet, loaded_wall=wall)
        sim = cls(world, wall)
        sim._dirty = None
        namespaces_global: dict[str, bool] = {}
        for service in fleet.spec.global_services:
            ns_ok = namespaces_global.get(service.namespace, True)
            namespaces_global[service.namespace] = ns_ok and service.namespace_global
        for spec in fleet.spec.clusters:
            state = ClusterState(
                spec=spec,
                kubernetes_version=spec.kubernetes_version,
                cilium_version=spec.cilium_version,
            )
            for service in fleet.spec.global_services:
                if spec.name in service.clusters:
                    key = service_key(service.namespace, service.name)
                    state.service_annotations[key] = {ANNOTATION_SERVICE_GLOBAL: "true"}
                    ns = state.namespace_annotations.setdefault(service.namespace, {})
                    if namespaces_global[service.namespace]:
                        ns[ANNOTATION_NAMESPACE_GLOBAL] = "true"
            world.clusters[spec.name] = state
            for fault in spec.faults:
                sim._add_fault(spec.name, fault, injected=False)
        # Declared networks were converged before the world began.
        settled = -fleet.spec.durations.mesh_propagation.total_seconds()
        for network in fleet.spec.networks:
            for name in network.members:
                state = world.clusters[name]
                state.network = network.name
                state.mesh_enabled_at = settled
                state.peers = {peer: settled for peer in network.members if peer != name}
                sim._record(AuditEvent.MEMBER_JOINED, name, network=network.name, initial=True)
        # Links up, every cache in sync.
        for name, state in world.clusters.items():
            for peer in state.peers:
                sim._links_ready.add(f"{name}|{peer}")
        for key in sim._service_keys():
            for name in world.clusters:
                world.exports[f"{name}|{key}"] = sim._export(name, key, 0.0)
        for link in sim._links_ready:
            viewer, peer = link.split("|")
            for key in sim._service_keys():
                if sim._is_source(peer, key):
                    sim._cache_set(key, viewer, peer, world.exports[f"{peer}|{key}"], 0.0)
        sim._step(0.0)
        return sim

    # --- time ---------------------------------------------------------------------------

    def wall_at(self, sim_time: float) -> dt.datetime:
        """The wall-clock instant a simulated time corresponds to."""
        scale = self.world.time_scale
        seconds = self.world.loaded_wall + sim_time * scale if scale > 0 else self.wall
        return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)

    def advance(self, target: float) -> None:
        """Apply every transition due at or before ``target`` (may be ``math.inf``)."""
        world = self.world
        while world.events and world.events[0].at <= target:
            t = max(world.events[0].at, world.now)
            world.now = t
            self._step(t)
        if math.isfinite(target) and target > world.now:
            world.now = target

    def _schedule(self, at: float, kind: str, **data: Any) -> None:
        item = Scheduled(at=at, seq=self._new_id(), kind=kind, data=data)
        keys = [(e.at, e.seq) for e in self.world.events]
        self.world.events.insert(bisect.bisect_right(keys, (item.at, item.seq)), item)

    def _new_id(self) -> int:
        value = self.world.next_id
        self.world.next_id += 1
        return value

    def _step(self, t: float) -> None:
        """Apply everything due at ``t``, let the mesh settle, then check continuity."""
        world = self.world
        for _ in range(10_000):  # a zero propagation delay reschedules at ``t``
            due: list[Scheduled] = []
            while world.events and world.events[0].at <= t:
                due.append(world.events.pop(0))
            for item in due:
                self._handle(item, t)
            self._settle(t)
            if not (world.events and world.events[0].at <= t):
                break
        self._monitor(t)

    def _handle(self, item: Scheduled, t: float) -> None:
        self._invalidate()
        if item.kind == "complete":
            self._complete(item.data["key"], t)
        elif item.kind == "deliver":
            self._deliver(item.data, t)
        elif item.kind == "fault":
            record = self._fault(item.data["id"])
            if not record.cleared and record.remaining > 0:
                self._fire(record, t, trigger="atSimTime")
        elif item.kind == "tick":  # a window opening or closing, a link converging
            self._touch(*item.data.get("clusters", []))

    # --- derived state -------------------------------------------------------------------

    def _service_keys(self) -> list[str]:
        return [service_key(s.namespace, s.name) for s in self.world.fleet.spec.global_services]

    def _service_spec(self, key: str) -> GlobalServiceSpec:
        spec = self._specs.get(key)
        if spec is None:
            raise NotFoundError(f"no global service {key!r} in the simulated fleet")
        return spec

    def _touch(self, *clusters: str) -> None:
        """These clusters' links must be recomputed at the next settle."""
        if self._dirty is not None:
            self._dirty.update(clusters)

    def _invalidate(self) -> None:
        """Conditions changed: forget what was derived from them."""
        self._by_cluster = None
        self._instant = None

    def _at(self, t: float) -> _Instant:
        """Which disturbances are active at ``t`` (computed once per instant)."""
        if self._instant is None or self._instant.t != t:
            self._instant = _Instant(t, self.world.conditions)
        return self._instant

    def _is_source(self, cluster: str, key: str) -> bool:
        """Whether ``cluster`` can ever export the service: only its declared clusters carry
        its annotations (``set_annotations`` refuses a service a cluster does not have)."""
        return cluster in self._service_spec(key).clusters

    def _cache_set(self, key: str, viewer: str, source: str, value: float, as_of: float) -> None:
        self.world.cache.setdefault(key, {}).setdefault(viewer, {})[source] = [value, as_of]

    def _conditions_of(self, cluster: str) -> list[Condition]:
        if self._by_cluster is None:
            index: dict[str, list[Condition]] = {}
            for condition in self.world.conditions:
                index.setdefault(condition.cluster, []).append(condition)
            self._by_cluster = index
        return self._by_cluster.get(cluster, [])

    def api_available(self, cluster: str, t: float) -> bool:
        return cluster not in self._at(t).api_down

    def _partitioned(self, viewer: str, peer: str, t: float) -> bool:
        instant = self._at(t)
        if not instant.cut_off and not instant.cut:
            return False
        if viewer in instant.cut_off or peer in instant.cut_off:
            return True
        return peer in instant.cut.get(viewer, ()) or viewer in instant.cut.get(peer, ())

    def _restarting(self, cluster: str, t: float) -> bool:
        return cluster in self._at(t).restarting

    def ready_endpoints(self, cluster: str, key: str, t: float) -> int:
        """The cluster's own ready endpoints of a service (0 while its agents restart)."""
        instant = self._at(t)
        memo = instant.ready.setdefault(key, {})
        count = memo.get(cluster)
        if count is None:
            lost = instant.lost.get(cluster, set())
            if cluster in instant.restarting or None in lost or key in lost:
                count = 0
            else:
                count = int(self._service_spec(key).clusters.get(cluster, 0))
            memo[cluster] = count
        return count

    def _is_global(self, cluster: str, key: str) -> bool:
        state = self.world.clusters[cluster]
        annotations = state.service_annotations.get(key)
        if annotations is None:
            return False
        namespace = key.split("/", 1)[0]
        ns = state.namespace_annotations.get(namespace, {})
        return (
            ns.get(ANNOTATION_NAMESPACE_GLOBAL) == "true"
            and annotations.get(ANNOTATION_SERVICE_GLOBAL) == "true"
        )

    def _export(self, cluster: str, key: str, t: float) -> int:
        """What ``cluster`` publishes to the mesh for a service right now."""
        annotations = self.world.clusters[cluster].service_annotations.get(key)
        if annotations is None or not self._is_global(cluster, key):
            return 0
        if annotations.get(ANNOTATION_SERVICE_SHARED, "true") == "false":
            return 0
        return self.ready_endpoints(cluster, key, t)

    def _connect_at(self, viewer: str, peer: str) -> float | None:
        """When ``viewer`` can first reach ``peer``'s clustermesh-apiserver."""
        v = self.world.clusters[viewer]
        p = self.world.clusters.get(peer)
        if p is None or peer not in v.peers:
            return None
        if v.mesh_enabled_at is None or p.mesh_enabled_at is None:
            return None
        return max(v.peers[peer], v.mesh_enabled_at, p.mesh_enabled_at)

    def _ready_at(self, viewer: str, peer: str) -> float | None:
        """When the link ``viewer -> peer`` converges (before any disturbance).

        A newcomer is seen by its peers only after it sees them: when ``peer``
        joined after ``viewer``, the link waits for ``peer -> viewer`` to converge.
        """
        return self._ready_from(viewer, peer, self._connect_at(viewer, peer))

    def _ready_from(self, viewer: str, peer: str, start: float | None) -> float | None:
        """``_ready_at`` once ``_connect_at(viewer, peer)`` is known (the hot path has it)."""
        if start is None:
            return None
        delay = self._propagation
        ready = start + delay
        v = self.world.clusters[viewer]
        p = self.world.clusters[peer]
        assert v.mesh_enabled_at is not None
        assert p.mesh_enabled_at is not None
        if p.mesh_enabled_at > v.mesh_enabled_at:
            reverse = self._connect_at(peer, viewer)
            if reverse is not None:
                ready = max(ready, reverse + delay + delay)
        return ready

    def _link_ready(self, viewer: str, peer: str, t: float) -> bool:
        """Whether ``viewer -> peer`` is ready at ``t`` (the fast path of ``link``)."""
        instant = self._at(t)
        if viewer in instant.restarting or peer in instant.restarting:
            return False
        ready_at = self._ready_at(viewer, peer)
        if ready_at is None or t < ready_at:
            return False
        return not self._partitioned(viewer, peer, t)

    def _disturbed(self, cluster: str, t: float) -> tuple[int, float | None, bool]:
        """(agent restarts begun by ``t``, the last one's start, any partition begun by ``t``)."""
        memo = self._at(t).disturbed
        found = memo.get(cluster)
        if found is None:
            restarts, last, partitions = 0, None, False
            for c in self._conditions_of(cluster):
                if c.start > t:
                    continue
                if c.kind is ConditionKind.AGENT_RESTART:
                    restarts += 1
                    last = c.start if last is None else max(last, c.start)
                elif c.kind is ConditionKind.MESH_PARTITION:
                    partitions = True
            found = memo[cluster] = (restarts, last, partitions)
        return found

    def _failures(self, viewer: str, peer: str, t: float) -> tuple[int, float | None]:
        """How often the link failed by ``t`` and when it last did (``numFailures``)."""
        v_count, v_last, v_cut = self._disturbed(viewer, t)
        p_count, p_last, p_cut = self._disturbed(peer, t)
        if not (v_cut or p_cut):
            lasts = [x for x in (v_last, p_last) if x is not None]
            return v_count + p_count, max(lasts) if lasts else None
        failures, last_failure = 0, None
        for cluster in (viewer, peer):
            for c in self._conditions_of(cluster):
                if c.start > t:
                    continue
                hits = c.kind is ConditionKind.AGENT_RESTART or (
                    c.kind is ConditionKind.MESH_PARTITION
                    and (c.peers is None or ({viewer, peer} - {cluster}) & set(c.peers))
                )
                if hits:
                    failures += 1
                    last_failure = max(last_failure or c.start, c.start)
        return failures, last_failure

    def link(self, viewer: str, peer: str, t: float) -> _Link:
        """The directed link's state at ``t``."""
        state = _Link()
        state.failures, state.last_failure = self._failures(viewer, peer, t)
        connect_at = self._connect_at(viewer, peer)
        ready_at = self._ready_from(viewer, peer, connect_at)
        if connect_at is None or ready_at is None or t < connect_at:
            return state
        if self._partitioned(viewer, peer, t):
            state.phase, state.status = "partitioned", STATUS_PARTITIONED
            return state
        if self._restarting(viewer, t) or self._restarting(peer, t):
            state.phase, state.status = "restarting", STATUS_WAITING
            return state
        state.connected = True
        state.status = f"etcd: 1/1 connected: https://{peer}.mesh.cilium.io:2379"
        state.phase = "syncing" if t < ready_at else "ready"
        state.ready = t >= ready_at
        return state

    def _settle(self, t: float) -> None:
        """Recompute links and exports at a transition point; resync newly-ready links."""
        world = self.world
        keys = self._service_keys()
        dirty = self._dirty
        self._dirty = set()
        if dirty is None:
            ready_now = {
                f"{v}|{p}"
                for v, state in world.clusters.items()
                for p in state.peers
                if self._link_ready(v, p, t)
            }
            added = ready_now - self._links_ready
            self._links_ready = world.links_ready = ready_now
        else:
            # Only links touching a cluster that changed can have changed.
            candidates = [(v, p) for v in dirty for p in world.clusters[v].peers]
            candidates += [
                (v, p)
                for v, state in world.clusters.items()
                if v not in dirty
                for p in dirty
                if p in state.peers
            ]
            added = set()
            for viewer, peer in candidates:
                link = f"{viewer}|{peer}"
                if not self._link_ready(viewer, peer, t):
                    self._links_ready.discard(link)
                elif link not in self._links_ready:
                    self._links_ready.add(link)
                    added.add(link)
        for link in sorted(added):
            viewer, peer = link.split("|")
            for key in keys:  # a (re)connected agent resynchronizes everything
                if self._is_source(peer, key):
                    self._cache_set(key, viewer, peer, self._export(peer, key, t), t)
        if self._config_changed:
            # A peer removed from the configuration takes its backends with it.
            self._config_changed = False
            for views in world.cache.values():
                for viewer, sources in views.items():
                    configured = world.clusters[viewer].peers
                    for source in [s for s in sources if s not in configured]:
                        del sources[source]
        delay = self._propagation
        for key in keys:
            for name in self._service_spec(key).clusters:  # no other cluster can export it
                if name not in world.clusters:
                    continue
                value = self._export(name, key, t)
                slot = f"{name}|{key}"
                if world.exports.get(slot) != value:
                    world.exports[slot] = value
                    self._schedule(
                        t + delay, "deliver", source=name, service=key, value=value, asOf=t
                    )

    def _deliver(self, data: Mapping[str, Any], t: float) -> None:
        """An export change reaches every peer whose link to the source is up now."""
        source, key, value, as_of = data["source"], data["service"], data["value"], data["asOf"]
        views = self.world.cache.setdefault(key, {})
        for viewer, state in self.world.clusters.items():
            if source not in state.peers or not self._link_ready(viewer, source, t):
                continue  # dropped: the viewer keeps its last-known backends
            entry = views.get(viewer, {}).get(source)
            if entry is None or entry[1] <= as_of:
                self._cache_set(key, viewer, source, value, as_of)

    def routing_view(self, viewer: str, key: str, t: float) -> RoutingView:
        """Where ``viewer`` routes a service: local ready backends plus its cached remote ones."""
        local = self.ready_endpoints(viewer, key, t)
        backends = [BackendSource(cluster=viewer, routable=local, ready=local)] if local else []
        for peer, routable, ready in self._remote_backends(viewer, key, t):
            stale = f"{viewer}|{peer}" not in self._links_ready
            backends.append(
                BackendSource(cluster=peer, routable=routable, ready=ready, stale=stale)
            )
        return RoutingView(viewer=viewer, backends=backends)

    def _remote_backends(self, viewer: str, key: str, t: float) -> list[tuple[str, int, int]]:
        """(source, routable, ready) for each peer whose backends ``viewer`` routes to."""
        if not self._is_global(viewer, key):
            return []
        found = []
        cached = self.world.cache.get(key, {}).get(viewer, {})
        for peer, (value, _) in sorted(cached.items()):
            routable = int(value)
            if routable <= 0:
                continue
            reachable = not self._partitioned(viewer, peer, t)
            ready = min(routable, self.ready_endpoints(peer, key, t)) if reachable else 0
            found.append((peer, routable, ready))
        return found

    def _counts(self, viewer: str, key: str, t: float, ready: Mapping[str, int]) -> _Counts:
        """``routing_view``'s totals without building it (the monitor's hot path)."""
        routable = ready_routable = ready.get(viewer, 0)
        if self._is_global(viewer, key):
            instant = self._at(t)
            partitions = bool(instant.cut_off or instant.cut)
            for peer, (value, _) in self.world.cache.get(key, {}).get(viewer, {}).items():
                if value <= 0:
                    continue
                routable += int(value)
                if partitions and self._partitioned(viewer, peer, t):
                    continue  # last-known backends across a partition answer nothing
                ready_routable += min(int(value), ready.get(peer, 0))
        return _Counts(routable=routable, ready_routable=ready_routable)

    def _monitor(self, t: float) -> None:
        """The continuity monitor: record every viewpoint below its minimum."""
        world = self.world
        open_ = {(v.service, v.viewpoint): v for v in world.violations if v.ended is None}
        for spec in world.fleet.spec.global_services:
            key = service_key(spec.namespace, spec.name)
            # Only its declared clusters have endpoints of a service (the rest count 0).
            ready = {
                name: self.ready_endpoints(name, key, t)
                for name in spec.clusters
                if name in world.clusters
            }
            for viewer in spec.clusters:
                if viewer not in world.clusters or not self._is_global(viewer, key):
                    continue
                view = self._counts(viewer, key, t, ready)
                current = open_.get((key, viewer))
                if view.ready_routable < spec.min_ready_endpoints:
                    if current is None:
                        record = ViolationRecord(
                            service=key,
                            viewpoint=viewer,
                            min_ready_endpoints=spec.min_ready_endpoints,
                            ready_routable=view.ready_routable,
                            routable=view.routable,
                            started=t,
                        )
                        world.violations.append(record)
                        self._record(
                            AuditEvent.VIOLATION,
                            viewer,
                            at=t,
                            service=key,
                            viewpoint=viewer,
                            readyRoutable=view.ready_routable,
                            routable=view.routable,
                            minReadyEndpoints=spec.min_ready_endpoints,
                        )
                    elif view.ready_routable < current.ready_routable:
                        current.ready_routable = view.ready_routable
                        current.routable = view.routable
                elif current is not None:
                    current.ended = t

    # --- audit -------------------------------------------------------------------------

    def _record(
        self, event: AuditEvent, cluster: str | None, at: float | None = None, **details: Any
    ) -> None:
        when = self.world.now if at is None else at
        self.audit.append(
            AuditEntry(
                at=self.wall_at(when), sim_time=when, cluster=cluster, event=event, details=details
            )
        )

    # --- faults ------------------------------------------------------------------------

    def _fault(self, fault_id: int) -> FaultRecord:
        for record in self.world.faults:
            if record.id == fault_id:
                return record
        raise NotFoundError(f"no fault with id {fault_id}")

    def _add_fault(self, cluster: str, fault: Fault, *, injected: bool) -> FaultRecord:
        record = FaultRecord(
            id=self._new_id(),
            cluster=cluster,
            fault=fault,
            remaining=fault.times,
            injected=injected,
        )
        self.world.faults.append(record)
        if fault.at_sim_time is not None:
            self._schedule(max(fault.at_sim_time, self.world.now), "fault", id=record.id)
        return record

    def add_fault(self, cluster: str, fault: Fault) -> FaultRecord:
        """Inject a fault at run time (its trigger decides when it fires)."""
        self._require(cluster)
        record = self._add_fault(cluster, fault, injected=True)
        self._record(
            AuditEvent.FAULT_INJECTED,
            cluster,
            action="added",
            id=record.id,
            **_fault_details(fault),
        )
        self._step(self.world.now)
        return record

    def clear_faults(self, cluster: str | None = None, fault_id: int | None = None) -> list[int]:
        """Clear faults (all, a cluster's, or one): windows close, hung operations resume."""
        t = self.world.now
        cleared: list[int] = []
        for record in self.world.faults:
            if record.cleared or (cluster and record.cluster != cluster):
                continue
            if fault_id is not None and record.id != fault_id:
                continue
            record.cleared = True
            record.armed = False
            self._touch(record.cluster)
            cleared.append(record.id)
            for condition in self.world.conditions:
                if condition.fault_id == record.id and (condition.end is None or condition.end > t):
                    condition.end = max(t, condition.start)
            for op in self.world.operations.values():
                if op.hung_by == record.id and op.state is OperationState.RUNNING:
                    op.hung_by = None
                    self._plan(op, t)
            self._record(AuditEvent.FAULT_INJECTED, record.cluster, action="cleared", id=record.id)
        self._invalidate()
        if fault_id is not None and not cleared:
            raise NotFoundError(f"no active fault with id {fault_id}")
        self._step(t)
        return cleared

    def _fire(self, record: FaultRecord, t: float, trigger: str) -> None:
        """A condition fault opens its window now; an operation fault arms itself."""
        fault = record.fault
        operational = fault.kind in (FaultKind.FAIL, FaultKind.HANG, FaultKind.SLOW)
        self._record(
            AuditEvent.FAULT_INJECTED,
            record.cluster,
            action="armed" if operational else "fired",
            id=record.id,
            trigger=trigger,
            **_fault_details(fault),
        )
        if operational:
            # Spent by the next operation on the cluster, whatever its kind.
            record.armed = True
            return
        record.remaining -= 1
        kinds = {
            FaultKind.MESH_PARTITION: ConditionKind.MESH_PARTITION,
            FaultKind.ENDPOINTS_LOST: ConditionKind.ENDPOINTS_LOST,
            FaultKind.API_UNAVAILABLE: ConditionKind.API_UNAVAILABLE,
        }
        if fault.kind in kinds:
            end = t + fault.duration.total_seconds() if fault.duration is not None else None
            self._open(
                kinds[fault.kind],
                record.cluster,
                t,
                end,
                peers=fault.peers,
                service=fault.service,
                fault_id=record.id,
            )

    def _open(
        self,
        kind: ConditionKind,
        cluster: str,
        start: float,
        end: float | None,
        **extra: Any,
    ) -> Condition:
        condition = Condition(
            id=self._new_id(), kind=kind, cluster=cluster, start=start, end=end, **extra
        )
        self.world.conditions.append(condition)
        self._invalidate()
        # Links depend on restarts and partitions only (API outages and lost endpoints
        # change what a cluster exports, which every settle checks anyway).
        links = [cluster] if kind in _LINK_CONDITIONS else []
        self._touch(*links)
        self._schedule(start, "tick", clusters=links)
        if end is not None:
            self._schedule(end, "tick", clusters=links)
        return condition

    def _trigger(self, cluster: str, trigger: FaultTrigger, t: float) -> None:
        """Fire the cluster's condition faults (and arm operation faults) for ``trigger``."""
        for record in self.world.faults:
            if record.cluster != cluster or record.cleared or record.remaining <= 0:
                continue
            if record.fault.on is not trigger:
                continue
            operational = record.fault.kind in (FaultKind.FAIL, FaultKind.HANG, FaultKind.SLOW)
            if operational and trigger is not FaultTrigger.AFTER_UPGRADE:
                continue  # applied by the operation itself
            self._fire(record, t, trigger=trigger.value)

    def _operation_faults(self, cluster: str, trigger: FaultTrigger) -> list[FaultRecord]:
        """Operation faults that apply to an operation starting now (and spend them)."""
        found: list[FaultRecord] = []
        for record in self.world.faults:
            if record.cluster != cluster or record.cleared or record.remaining <= 0:
                continue
            if record.fault.kind not in (FaultKind.FAIL, FaultKind.HANG, FaultKind.SLOW):
                continue
            if record.armed or record.fault.on is trigger:
                found.append(record)
        for record in found:
            record.remaining -= 1
            record.armed = False
            self._record(
                AuditEvent.FAULT_INJECTED,
                cluster,
                action="fired",
                id=record.id,
                trigger=trigger.value,
                **_fault_details(record.fault),
            )
        return found

    # --- operations --------------------------------------------------------------------

    def _require(self, cluster: str) -> ClusterState:
        state = self.world.clusters.get(cluster)
        if state is None:
            raise NotFoundError(f"no cluster {cluster!r} in the simulated fleet")
        return state

    def require_api(self, cluster: str) -> None:
        """Raise ClusterUnavailableError while the cluster's API server is down."""
        self._require(cluster)
        if not self.api_available(cluster, self.world.now):
            raise ClusterUnavailableError(cluster)

    def remembered(self, key: str, kind: str, cluster: str) -> IdempotencyRecord | None:
        """The first call's record for ``key``; a conflict if the key meant something else."""
        record = self.world.idempotency.get(key)
        if record is None:
            return None
        if record.kind != kind or record.cluster != cluster:
            raise OperationConflictError(
                f"idempotency key {key!r} was used for {record.kind} on {record.cluster!r}, "
                f"not {kind} on {cluster!r}"
            )
        return record

    def remember(
        self, key: str, kind: str, cluster: str, result: dict[str, Any] | None = None
    ) -> None:
        self.world.idempotency[key] = IdempotencyRecord(kind=kind, cluster=cluster, result=result)

    def start_operation(
        self,
        key: str,
        cluster: str,
        kind: OperationKind,
        target_version: str | None = None,
        network: str | None = None,
    ) -> SimOperation:
        """Start (or, for a known key, return) a long-running operation."""
        known = self.remembered(key, kind.value, cluster)
        if known is not None:
            return self.world.operations[key]
        state = self._require(cluster)
        if kind is not OperationKind.CONTROL_PLANE_UPGRADE:
            # Control planes are upgraded through the cloud's API, everything else in-cluster.
            self.require_api(cluster)
        for op in self.world.operations.values():
            if op.cluster == cluster and op.kind is kind and op.state is OperationState.RUNNING:
                raise OperationInProgressError(cluster, kind, op.key)
        t = self.world.now
        op = SimOperation(
            key=key,
            cluster=cluster,
            kind=kind,
            target_version=target_version,
            network=network,
            started=t,
        )
        self.world.operations[key] = op
        self.remember(key, kind.value, cluster, {"operation": key})
        trigger = {
            OperationKind.CONTROL_PLANE_UPGRADE: FaultTrigger.CONTROL_PLANE_UPGRADE,
            OperationKind.CILIUM_UPGRADE: FaultTrigger.CILIUM_UPGRADE,
            OperationKind.ENABLE_MESH: FaultTrigger.JOIN,
        }[kind]
        durations = self.world.fleet.spec.durations
        base = {
            OperationKind.CONTROL_PLANE_UPGRADE: durations.control_plane_upgrade,
            OperationKind.CILIUM_UPGRADE: durations.cilium_upgrade,
            OperationKind.ENABLE_MESH: durations.mesh_propagation,
        }[kind].total_seconds()
        started_event = {
            OperationKind.CONTROL_PLANE_UPGRADE: AuditEvent.CONTROL_PLANE_UPGRADE_STARTED,
            OperationKind.CILIUM_UPGRADE: AuditEvent.CILIUM_UPGRADE_STARTED,
        }.get(kind)
        if started_event is not None:
            current = (
                state.kubernetes_version
                if kind is OperationKind.CONTROL_PLANE_UPGRADE
                else state.cilium_version
            )
            self._record(
                started_event, cluster, key=key, fromVersion=current, toVersion=target_version
            )
        problem = self._version_problem(state, kind, target_version)
        if kind is OperationKind.ENABLE_MESH:
            if state.network is not None and state.network != network:
                problem = f"cluster already belongs to network {state.network!r}"
            else:
                state.network = network  # claimed now: a cluster joins one network at most
        faults = self._operation_faults(cluster, trigger)
        self._trigger(cluster, trigger, t)
        failing = next((f for f in faults if f.fault.kind is FaultKind.FAIL), None)
        if failing is not None and problem is None:
            problem = failing.fault.message
        if problem is not None:
            self._finish(op, t, OperationState.FAILED, problem)
            return op
        factor = math.prod(f.fault.factor for f in faults if f.fault.kind is FaultKind.SLOW)
        op.duration = base * factor
        hang = next((f for f in faults if f.fault.kind is FaultKind.HANG), None)
        if hang is not None:
            op.hung_by = hang.id
            op.phase = "waiting"
            op.message = hang.fault.message
            return op
        self._plan(op, t)
        return op

    def _version_problem(
        self, state: ClusterState, kind: OperationKind, target: str | None
    ) -> str | None:
        if kind is OperationKind.ENABLE_MESH or target is None:
            return None
        current = Version.parse(
            state.kubernetes_version
            if kind is OperationKind.CONTROL_PLANE_UPGRADE
            else state.cilium_version
        )
        wanted = Version.parse(target)
        if wanted < current:
            return f"cannot downgrade from {current} to {wanted}"
        if kind is OperationKind.CONTROL_PLANE_UPGRADE and wanted.minor_version > (
            current.minor_version.next()
        ):
            return f"control planes move one minor at a time: {current} cannot go to {wanted}"
        return None

    def _plan(self, op: SimOperation, t: float) -> None:
        """Lay out the operation's timeline from ``t``: disruptions and completion."""
        op.planned_from = t
        op.finish_at = t + op.duration
        durations = self.world.fleet.spec.durations
        if op.kind is OperationKind.CONTROL_PLANE_UPGRADE:
            op.phase = "upgrading control plane"
            blip_start = t + op.duration * API_BLIP_AT
            blip = min(API_BLIP_SECONDS, op.duration * 0.1)
            self._open(
                ConditionKind.API_UNAVAILABLE,
                op.cluster,
                blip_start,
                blip_start + blip,
                operation=op.key,
            )
        elif op.kind is OperationKind.CILIUM_UPGRADE:
            op.phase = "rolling out cilium-operator"
            restart_start = t + op.duration * AGENT_RESTART_AT
            restart_end = restart_start + durations.agent_restart.total_seconds()
            op.restart_window = [restart_start, restart_end]
            op.finish_at = max(op.finish_at, restart_end)
            self._open(
                ConditionKind.AGENT_RESTART,
                op.cluster,
                restart_start,
                restart_end,
                operation=op.key,
            )
        else:
            op.phase = "deploying clustermesh-apiserver"
        self._schedule(op.finish_at, "complete", key=op.key)

    def _complete(self, key: str, t: float) -> None:
        op = self.world.operations[key]
        if op.state is not OperationState.RUNNING or op.finish_at is None or op.finish_at > t:
            return  # superseded by a re-plan
        state = self.world.clusters[op.cluster]
        if op.kind is OperationKind.CONTROL_PLANE_UPGRADE and op.target_version:
            state.kubernetes_version = op.target_version
        elif op.kind is OperationKind.CILIUM_UPGRADE and op.target_version:
            state.cilium_version = op.target_version
        elif op.kind is OperationKind.ENABLE_MESH:
            state.mesh_enabled_at = t
            self._schedule_links(op.cluster)
        self._finish(op, t, OperationState.SUCCEEDED, None)
        if op.kind is not OperationKind.ENABLE_MESH:
            self._trigger(op.cluster, FaultTrigger.AFTER_UPGRADE, t)

    def _finish(
        self, op: SimOperation, t: float, outcome: OperationState, message: str | None
    ) -> None:
        op.state = outcome
        op.finished = t
        op.finish_at = t
        op.message = message
        op.phase = "done" if outcome is OperationState.SUCCEEDED else "failed"
        succeeded = outcome is OperationState.SUCCEEDED
        state = self.world.clusters[op.cluster]
        details: dict[str, Any] = {"key": op.key}
        if message:
            details["message"] = message
        if op.kind is OperationKind.CONTROL_PLANE_UPGRADE:
            event = (
                AuditEvent.CONTROL_PLANE_UPGRADE_COMPLETED
                if succeeded
                else AuditEvent.CONTROL_PLANE_UPGRADE_FAILED
            )
            self._record(event, op.cluster, version=state.kubernetes_version, **details)
        elif op.kind is OperationKind.CILIUM_UPGRADE:
            event = (
                AuditEvent.CILIUM_UPGRADE_COMPLETED
                if succeeded
                else AuditEvent.CILIUM_UPGRADE_FAILED
            )
            self._record(event, op.cluster, version=state.cilium_version, **details)
        elif succeeded:
            self._record(AuditEvent.MEMBER_JOINED, op.cluster, network=op.network, **details)
        elif state.network == op.network and state.mesh_enabled_at is None:
            state.network = None  # a failed join leaves the cluster free

    def _schedule_links(self, cluster: str) -> None:
        """Mark the moments the cluster's links (both directions) will converge."""
        t = self.world.now
        self._touch(cluster)
        moments: set[float] = set()
        for viewer, state in self.world.clusters.items():
            for peer in state.peers:
                if cluster not in (viewer, peer):
                    continue
                ready_at = self._ready_at(viewer, peer)
                if ready_at is not None and ready_at > t:
                    moments.add(ready_at)
        for moment in sorted(moments):
            self._schedule(moment, "tick", clusters=[cluster])

    def progress(self, key: str) -> OperationProgress:
        """An operation as a reader sees it now."""
        op = self.world.operations[key]
        t = self.world.now
        percent = 100
        if op.state is OperationState.RUNNING:
            if op.finish_at is None or op.duration <= 0:
                percent = 0 if op.hung_by is not None else 99
            else:
                begun = op.planned_from if op.planned_from is not None else op.started
                percent = int(min(99, max(0, 100 * (t - begun) / op.duration)))
        elif op.state is OperationState.FAILED:
            percent = 0
        phase = op.phase
        components: list[RolloutStatus] = []
        if op.kind is OperationKind.CILIUM_UPGRADE:
            components = self._cilium_rollout(op, t)
            if op.state is OperationState.RUNNING and op.restart_window:
                start, end = op.restart_window
                if t >= end:
                    phase = "rolling out clustermesh-apiserver"
                elif t >= start:
                    phase = "rolling out agent DaemonSet"
        return OperationProgress(
            key=op.key,
            cluster=op.cluster,
            kind=op.kind,
            state=op.state,
            target_version=op.target_version,
            percent=percent,
            phase=phase,
            message=op.message,
            started_at=self.wall_at(op.started),
            finished_at=self.wall_at(op.finished) if op.finished is not None else None,
            components=components,
        )

    def _cilium_rollout(self, op: SimOperation, t: float) -> list[RolloutStatus]:
        nodes = self.world.clusters[op.cluster].spec.nodes
        done = op.state is OperationState.SUCCEEDED
        version = op.target_version
        if done or op.state is OperationState.FAILED or not op.restart_window:
            count = nodes if done else 0
            return [
                RolloutStatus(
                    name="cilium-operator", version=version, desired=1, updated=int(done), ready=1
                ),
                RolloutStatus(
                    name="cilium",
                    kind="DaemonSet",
                    version=version,
                    desired=nodes,
                    updated=count,
                    ready=nodes,
                ),
                RolloutStatus(
                    name="clustermesh-apiserver",
                    version=version,
                    desired=1,
                    updated=int(done),
                    ready=1,
                ),
            ]
        start, end = op.restart_window
        if t < start:
            agent_updated, agent_ready = 0, nodes
        elif t < end:
            span = max(end - start, 1e-9)
            agent_updated = max(1, math.ceil(nodes * (t - start) / span))
            agent_ready = max(0, agent_updated - 1)
        else:
            agent_updated, agent_ready = nodes, nodes
        return [
            RolloutStatus(name="cilium-operator", version=version, desired=1, updated=1, ready=1),
            RolloutStatus(
                name="cilium",
                kind="DaemonSet",
                version=version,
                desired=nodes,
                updated=agent_updated,
                ready=agent_ready,
            ),
            RolloutStatus(
                name="clustermesh-apiserver",
                version=version,
                desired=1,
                updated=int(t >= end),
                ready=int(not start <= t < end),
            ),
        ]

    # --- mesh configuration --------------------------------------------------------------

    def disable_mesh(self, cluster: str) -> None:
        state = self._require(cluster)
        self.require_api(cluster)
        network = state.network
        state.mesh_enabled_at = None
        state.network = None
        state.peers = {}
        self._config_changed = True
        self._dirty = None  # links to and from it vanish: recompute them all
        self._record(AuditEvent.MEMBER_REMOVED, cluster, network=network)
        self._step(self.world.now)

    def connect(self, cluster: str, peers: Sequence[str]) -> None:
        state = self._require(cluster)
        self.require_api(cluster)
        for peer in peers:
            self._require(peer)  # all of them before changing anything
        added = []
        for peer in peers:
            if peer != cluster and peer not in state.peers:
                state.peers[peer] = self.world.now
                added.append(peer)
        self._record(AuditEvent.MESH_CONNECTED, cluster, peers=list(peers), added=added)
        self._schedule_links(cluster)
        self._step(self.world.now)

    def disconnect(self, cluster: str, peers: Sequence[str]) -> None:
        state = self._require(cluster)
        self.require_api(cluster)
        removed = [peer for peer in peers if state.peers.pop(peer, None) is not None]
        self._config_changed = True
        self._dirty = None  # removed links are no longer candidates: recompute them all
        self._record(AuditEvent.MESH_DISCONNECTED, cluster, peers=list(peers), removed=removed)
        self._step(self.world.now)

    # --- annotations ---------------------------------------------------------------------

    def set_annotations(
        self,
        cluster: str,
        namespace: str,
        name: str | None,
        changes: Mapping[str, str | None],
        key: str = "",
    ) -> AnnotationChange:
        """Apply annotation changes; a service's drain keeps the drain record the Kubernetes
        backend keeps (``engine.domain.drain``), so a drain retried under a new ``key``
        reports what was there before the first, and a restore puts exactly that back."""
        state = self._require(cluster)
        self.require_api(cluster)
        if name is None:
            target = state.namespace_annotations.setdefault(namespace, {})
            previous = {k: target.get(k) for k in changes}
            patch: Mapping[str, str | None] = changes
        else:
            skey = service_key(namespace, name)
            if skey not in state.service_annotations:
                raise NotFoundError(f"cluster {cluster!r} has no service {skey!r}")
            target = state.service_annotations[skey]
            plan = plan_annotations(target, changes, key)
            previous, patch = plan.previous, plan.patch
        was_drained = target.get(ANNOTATION_SERVICE_SHARED) == "false"
        for k, v in patch.items():
            if v is None:
                target.pop(k, None)
            else:
                target[k] = v
        current = {k: target.get(k) for k in previous}
        change = AnnotationChange(
            cluster=cluster, namespace=namespace, name=name, previous=previous, current=current
        )
        event = AuditEvent.ANNOTATIONS_CHANGED
        if name is not None and ANNOTATION_SERVICE_SHARED in changes:
            # What the service was and is now (``previous`` may be a first drain's record).
            was = was_drained
            now = target.get(ANNOTATION_SERVICE_SHARED) == "false"
            if now and not was:
                event = AuditEvent.SERVICE_DRAINED
            elif was and not now:
                event = AuditEvent.SERVICE_RESTORED
        self._record(
            event,
            cluster,
            namespace=namespace,
            service=name,
            previous=previous,
            current=current,
        )
        self._step(self.world.now)
        return change

    # --- reads -------------------------------------------------------------------------

    def describe(self, cluster: str) -> MemberDescription:
        state = self._require(cluster)
        t = self.world.now
        spec = state.spec
        api = self.api_available(cluster, t)
        reason: str | None = None
        if not api:
            reason = "API server unavailable"
        elif self._restarting(cluster, t):
            reason = "cilium agents restarting"
        return MemberDescription(
            name=cluster,
            kubernetes_version=state.kubernetes_version,
            cilium_version=state.cilium_version,
            labels=dict(spec.labels),
            update_group=spec.update_group,
            maintenance_window=spec.maintenance_window,
            cluster_id=spec.cluster_id,
            pod_cidrs=list(spec.pod_cidrs),
            network_mode=spec.network_mode,
            acns=spec.acns,
            self_managed_mesh=spec.self_managed_mesh,
            mesh_enabled=state.mesh_enabled_at is not None,
            network=state.network,
            mesh_peers=sorted(state.peers),
            nodes=spec.nodes,
            api_available=api,
            healthy=reason is None,
            reason=reason,
        )

    def mesh_view(self, cluster: str, only: str | None = None) -> MemberMeshView:
        """``cluster``'s agents' view of its peers (with ``only``: of that one peer alone)."""
        state = self._require(cluster)
        t = self.world.now
        if not self.api_available(cluster, t):
            return MemberMeshView(
                cluster=cluster, api_available=False, error="API server unavailable"
            )
        if state.mesh_enabled_at is None:
            return MemberMeshView(cluster=cluster, error="ClusterMesh is not enabled")
        nodes = state.spec.nodes
        running = self._running_cilium(cluster)
        if running is not None:
            rollout = {c.name: c for c in self._cilium_rollout(running, t)}
            agent, apiserver = rollout["cilium"], rollout["clustermesh-apiserver"]
        else:
            # model_construct here and below: the simulator's own state is already valid,
            # and a full mesh read builds members² of these (65,025 at 255 members).
            agent = RolloutStatus.model_construct(
                name="cilium",
                kind="DaemonSet",
                version=state.cilium_version,
                desired=nodes,
                updated=nodes,
                ready=nodes,
            )
            apiserver = RolloutStatus.model_construct(
                name="clustermesh-apiserver",
                kind="Deployment",
                version=state.cilium_version,
                desired=1,
                updated=1,
                ready=1,
            )
        remotes = []
        peers = sorted(state.peers) if only is None else [p for p in (only,) if p in state.peers]
        for peer in peers:
            if self._link_ready(cluster, peer, t):
                # Every viewer whose ready link failed as often sees this peer the same way.
                remotes.append(self._ready_remote_status(peer, *self._failures(cluster, peer, t)))
                continue
            remotes.append(self._remote_status(self.link(cluster, peer, t), peer))
        return MemberMeshView.model_construct(
            cluster=cluster,
            api_available=True,
            error=None,
            agent=agent,
            clustermesh_apiserver=apiserver,
            remote_clusters=remotes,
        )

    def _running_cilium(self, cluster: str) -> SimOperation | None:
        """The cluster's running Cilium upgrade, if any (indexed once per access)."""
        if self._cilium_running is None:
            self._cilium_running = {
                op.cluster: op
                for op in self.world.operations.values()
                if op.kind is OperationKind.CILIUM_UPGRADE and op.state is OperationState.RUNNING
            }
        return self._cilium_running.get(cluster)

    def _remote_status(self, link: _Link, peer: str) -> RemoteClusterStatus:
        """How a viewer's agents report the link to ``peer``."""
        configured = link.connected
        return RemoteClusterStatus.model_construct(
            name=peer,
            ready=link.ready,
            connected=link.connected,
            status=link.status,
            num_nodes=self.world.clusters[peer].spec.nodes if link.ready else 0,
            num_endpoints=0,
            num_identities=0,
            num_shared_services=0,
            num_failures=link.failures,
            last_failure=None if link.last_failure is None else self.wall_at(link.last_failure),
            config=self._remote_config(peer) if configured else None,
            synced=_SYNCED[link.ready] if configured else None,
        )

    def _ready_remote_status(
        self, peer: str, failures: int, last_failure: float | None
    ) -> RemoteClusterStatus:
        """A ready link's status (shared: readers never change what they are given)."""
        key = (peer, failures, last_failure)
        found = self._ready_remote.get(key)
        if found is None:
            link = _Link()
            link.ready = link.connected = True
            link.phase = "ready"
            link.status = f"etcd: 1/1 connected: https://{peer}.mesh.cilium.io:2379"
            link.failures, link.last_failure = failures, last_failure
            found = self._ready_remote[key] = self._remote_status(link, peer)
        return found

    def _remote_config(self, peer: str) -> RemoteClusterConfig:
        """The configuration an agent retrieves from ``peer`` (one shared value per peer)."""
        cached = self._configs.get(peer)
        if cached is None:
            cached = RemoteClusterConfig(
                cluster_id=self.world.clusters[peer].spec.cluster_id,
                kvstoremesh=True,
                required=True,
                retrieved=True,
            )
            self._configs[peer] = cached
        return cached

    def mesh_health(self, members: Sequence[str], focus: str | None = None) -> MeshHealth:
        self._cilium_running = None  # operations may have changed since the last read
        views = [self.mesh_view(m, only=None if focus in (None, m) else focus) for m in members]
        return MeshHealth(observed_at=self.wall_at(self.world.now), members=views, focus=focus)

    def not_ready_links(
        self, members: Sequence[str], focus: str | None = None
    ) -> list[NotReadyLink]:
        """``mesh_health(members, focus).not_ready_links()``, building only troubled views.

        A member whose API and mesh are up, with no Cilium rollout running, and whose
        every expected link is in ``links_ready`` has nothing to report: readiness only
        changes at transition points, and the world has been advanced to now.
        """
        self._cilium_running = None  # operations may have changed since the last read
        t = self.world.now
        names = list(members)
        ready = self._links_ready
        found: list[NotReadyLink] = []
        for member in names:
            only = None if focus in (None, member) else focus
            expected = names if only is None else [only]
            state = self._require(member)
            if (
                state.mesh_enabled_at is not None
                and self.api_available(member, t)
                and self._running_cilium(member) is None
                and all(peer == member or f"{member}|{peer}" in ready for peer in expected)
            ):
                continue
            found += view_problems(self.mesh_view(member, only), expected)
        return found

    def global_services(self, members: Iterable[str]) -> list[GlobalService]:
        t = self.world.now
        wanted = list(members)
        for member in wanted:
            self._require(member)
        found: list[GlobalService] = []
        for spec in self.world.fleet.spec.global_services:
            key = service_key(spec.namespace, spec.name)
            holders = [m for m in wanted if key in self.world.clusters[m].service_annotations]
            if not any(
                self.world.clusters[m].service_annotations[key].get(ANNOTATION_SERVICE_GLOBAL)
                == "true"
                for m in holders
            ):
                continue
            service = GlobalService(
                namespace=spec.namespace,
                name=spec.name,
                min_ready_endpoints=spec.min_ready_endpoints,
            )
            for member in holders:
                state = self.world.clusters[member]
                service.per_cluster[member] = ClusterServiceState(
                    cluster=member,
                    annotations=dict(state.service_annotations[key]),
                    namespace_annotations=dict(state.namespace_annotations.get(spec.namespace, {})),
                    ready_endpoints=self.ready_endpoints(member, key, t),
                    endpoints=int(spec.clusters.get(member, 0)),
                )
                service.routing[member] = self.routing_view(member, key, t)
            found.append(service)
        return found


def _fault_details(fault: Fault) -> dict[str, Any]:
    return fault.to_json_dict()
