"""The simulated world advancing in time: the event loop, the mesh's links and caches, and the
continuity monitor (pure: no I/O, no clock).

Nothing runs in the background: the world is a document (``model.World``) that
stores *when* things will change (operation completions, agent restarts
ending, propagation delays elapsing, fault windows closing) as scheduled
events (``event_queue``). Every access first advances it to "now" with
:meth:`TimelineSimulation.advance`, applying the scheduled transitions in time
order and running the continuity monitor at each transition point. Between
transition points nothing changes, so checking there is exact: a violation is
recorded at the simulated time it happened even if nobody was looking then.

Time is simulated seconds since the fleet was loaded (``simTime``). The
caller maps wall time to simulated time (``timeScale`` real seconds per
simulated second); with ``timeScale`` 0 the caller advances to infinity, so
every pending transition is applied at once.

The simulation is one class built in layers, each module adding one job:
this one (time, links, exports, continuity), ``faults``, ``operations``, and
``world.Simulation`` (loading, mesh configuration, annotations and the reads).
"""

from __future__ import annotations

import abc
import datetime as dt
import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from activities.backends.simulated import event_queue
from activities.backends.simulated.event_queue import Scheduled
from activities.backends.simulated.model import (
    AuditEntry,
    AuditEvent,
    ClusterState,
    Condition,
    ConditionKind,
    SimOperation,
    ViolationRecord,
    World,
    service_key,
)
from engine.domain.backend import ClusterUnavailableError
from engine.domain.errors import NotFoundError
from engine.domain.fleet import GlobalServiceSpec
from engine.domain.mesh import RemoteClusterConfig, RemoteClusterStatus
from engine.domain.services import (
    ANNOTATION_NAMESPACE_GLOBAL,
    ANNOTATION_SERVICE_GLOBAL,
    ANNOTATION_SERVICE_SHARED,
    BackendSource,
    RoutingView,
)

STATUS_WAITING = "Waiting for initial connection to be established"
STATUS_PARTITIONED = "etcd: 0/1 connected: context deadline exceeded (connection lost)"


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
        #: Memo of each cluster's past disturbances of its links
        #: (see ``TimelineSimulation._disturbed``).
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


class Link:
    """A directed link's state at one instant (derived, never stored)."""

    __slots__ = ("connected", "failures", "last_failure", "ready", "status")

    def __init__(self) -> None:
        self.ready = False
        self.connected = False
        self.status = STATUS_WAITING
        self.failures = 0
        self.last_failure: float | None = None


class TimelineSimulation(abc.ABC):
    """Reads and changes a :class:`World`; collects the audit entries it produces.

    ``wall`` is the wall-clock time of this access (seconds since the epoch),
    used only to stamp audit entries when ``timeScale`` is 0. The concrete class
    is ``world.Simulation``; this layer advances time and keeps the mesh's
    derived state (links, exports, caches) and the continuity monitor.
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
        #: cluster -> the services it can export (``_sources_of``).
        self._sources: dict[str, list[str]] | None = None
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

    # --- time ---------------------------------------------------------------------------

    def wall_at(self, sim_time: float) -> dt.datetime:
        """The wall-clock instant a simulated time corresponds to."""
        scale = self.world.time_scale
        seconds = self.world.loaded_wall + sim_time * scale if scale > 0 else self.wall
        return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)

    def advance(self, target: float) -> None:
        """Apply every transition due at or before ``target`` (may be ``math.inf``)."""
        world = self.world
        while event_queue.is_due(world.events, target):
            t = max(world.events[0].at, world.now)
            world.now = t
            self._step(t)
        if math.isfinite(target) and target > world.now:
            world.now = target

    def _schedule(self, at: float, kind: str, **data: Any) -> None:
        item = Scheduled(at=at, seq=self._new_id(), kind=kind, data=data)
        event_queue.push(self.world.events, item)

    def _new_id(self) -> int:
        value = self.world.next_id
        self.world.next_id += 1
        return value

    def _step(self, t: float) -> None:
        """Apply everything due at ``t``, let the mesh settle, then check continuity."""
        world = self.world
        for _ in range(10_000):  # a zero propagation delay reschedules at ``t``
            for item in event_queue.pop_due(world.events, t):
                self._handle(item, t)
            self._settle(t)
            if not event_queue.is_due(world.events, t):
                break
        self._monitor(t)

    @abc.abstractmethod
    def _handle(self, item: Scheduled, t: float) -> None:
        """Apply one scheduled transition (``world.Simulation`` knows every kind)."""

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
            conditions = self.world.conditions
            self._instant = _Instant(t, conditions[self.world.ended_before(t) :])
        return self._instant

    def _sources_of(self, cluster: str) -> list[str]:
        """The services ``cluster`` can ever export (``_is_source``), in declaration order."""
        if self._sources is None:
            index: dict[str, list[str]] = {}
            for key, spec in self._specs.items():
                for name in spec.clusters:
                    index.setdefault(name, []).append(key)
            self._sources = index
        return self._sources.get(cluster, [])

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
        """Whether the cluster's API server answers at ``t``."""
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
        return self._ready_in(self._at(t), viewer, peer)

    def _ready_in(self, instant: _Instant, viewer: str, peer: str) -> bool:
        """``_link_ready`` at ``instant`` (settling asks it for every link of every cluster
        that changed)."""
        restarting = instant.restarting
        if viewer in restarting or peer in restarting:
            return False
        ready_at = self._ready_at(viewer, peer)
        if ready_at is None or instant.t < ready_at:
            return False
        if instant.cut_off or instant.cut:
            return not self._partitioned(viewer, peer, instant.t)
        return True

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

    def link(self, viewer: str, peer: str, t: float) -> Link:
        """The directed link's state at ``t``."""
        state = Link()
        state.failures, state.last_failure = self._failures(viewer, peer, t)
        connect_at = self._connect_at(viewer, peer)
        ready_at = self._ready_from(viewer, peer, connect_at)
        if connect_at is None or ready_at is None or t < connect_at:
            return state
        if self._partitioned(viewer, peer, t):
            state.status = STATUS_PARTITIONED
            return state
        if self._restarting(viewer, t) or self._restarting(peer, t):
            state.status = STATUS_WAITING
            return state
        state.connected = True
        state.status = f"etcd: 1/1 connected: https://{peer}.mesh.cilium.io:2379"
        state.ready = t >= ready_at
        return state

    def _settle(self, t: float) -> None:
        """Recompute links and exports at a transition point; resync newly-ready links."""
        world = self.world
        keys = self._service_keys()
        dirty = self._dirty
        self._dirty = set()
        instant = self._at(t)
        ready_in = self._ready_in
        if dirty is None:
            ready_now = {
                f"{v}|{p}"
                for v, state in world.clusters.items()
                for p in state.peers
                if ready_in(instant, v, p)
            }
            added = ready_now - self._links_ready
            self._links_ready = world.links_ready = ready_now
        else:
            # Only links touching a cluster that changed can have changed.
            candidates = [(v, p) for v in dirty for p in world.clusters[v].peers]
            if dirty:
                candidates += [
                    (v, p)
                    for v, state in world.clusters.items()
                    if v not in dirty
                    for p in dirty
                    if p in state.peers
                ]
            added = set()
            links_ready = self._links_ready
            for viewer, peer in candidates:
                link = f"{viewer}|{peer}"
                if not ready_in(instant, viewer, peer):
                    links_ready.discard(link)
                elif link not in links_ready:
                    links_ready.add(link)
                    added.add(link)
        for link in sorted(added):
            viewer, peer = link.split("|")
            for key in self._sources_of(peer):  # a (re)connected agent resynchronizes all
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
        # Built without validation (every field given, of its type): the hot read path.
        local = self.ready_endpoints(viewer, key, t)
        source = BackendSource.model_construct
        backends = (
            [source(cluster=viewer, routable=local, ready=local, stale=False)] if local else []
        )
        for peer, routable, ready in self._remote_backends(viewer, key, t):
            stale = f"{viewer}|{peer}" not in self._links_ready
            backends.append(source(cluster=peer, routable=routable, ready=ready, stale=stale))
        return RoutingView.model_construct(viewer=viewer, backends=backends)

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
