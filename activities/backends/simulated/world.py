"""The simulated world as its callers see it: ``Simulation``, loading a fleet, configuring the
mesh, annotating services and reading members, mesh health and global services.

``Simulation`` is built in layers, one module each: ``timeline`` (time, links,
exports, the continuity monitor), ``faults``, ``operations``, and this one. The
persisted document is ``model.World``; its scheduled transitions are
``event_queue``'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from activities.backends.simulated.event_queue import Scheduled
from activities.backends.simulated.model import (
    AuditEvent,
    ClusterState,
    SimOperation,
    World,
    service_key,
)
from activities.backends.simulated.operations import OperationSimulation
from activities.backends.simulated.timeline import Link
from engine.domain.backend import OperationKind, OperationState
from engine.domain.drain import plan_annotations
from engine.domain.errors import NotFoundError
from engine.domain.fleet import SimulatedFleet
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
from engine.domain.services import (
    ANNOTATION_NAMESPACE_GLOBAL,
    ANNOTATION_SERVICE_GLOBAL,
    ANNOTATION_SERVICE_SHARED,
    AnnotationChange,
    ClusterServiceState,
    GlobalService,
)

#: Synchronization flags of a converged link (True) and of one still syncing (False).
_SYNCED = {
    ready: RemoteClusterSynced(nodes=ready, endpoints=ready, identities=ready, services=ready)
    for ready in (True, False)
}


class Simulation(OperationSimulation):
    """Reads and changes a :class:`World`; collects the audit entries it produces.

    ``wall`` is the wall-clock time of this access (seconds since the epoch),
    used only to stamp audit entries when ``timeScale`` is 0.
    """

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

    # --- mesh configuration --------------------------------------------------------------

    def disable_mesh(self, cluster: str) -> None:
        """Take the cluster out of its network: its links and peers go at once."""
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
        """Configure ``peers`` on the cluster; the links converge after propagation."""
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
        """Remove ``peers`` from the cluster's configuration (and their backends)."""
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
        """The member as its API and agents show it now."""
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

    def _remote_status(self, link: Link, peer: str) -> RemoteClusterStatus:
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
            link = Link()
            link.ready = link.connected = True
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
        """Every member's view of the mesh now (``focus``: of that one peer)."""
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
        """The global services the members hold, with their routing views."""
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
                # Built without validation (every field given, of its type): a 255-member
                # read builds one per holder, and the drain and verify steps poll it.
                service.per_cluster[member] = ClusterServiceState.model_construct(
                    cluster=member,
                    annotations=dict(state.service_annotations[key]),
                    namespace_annotations=dict(state.namespace_annotations.get(spec.namespace, {})),
                    ready_endpoints=self.ready_endpoints(member, key, t),
                    endpoints=int(spec.clusters.get(member, 0)),
                )
                service.routing[member] = self.routing_view(member, key, t)
            found.append(service)
        return found
