"""Global services: the Cilium annotations that make a service global, each cluster's copy
of it, where each cluster routes it, and the report that flags misconfigured ones.

The mesh runs with ``clustermesh-default-global-namespace: false``: a Service
is global only when its Namespace has ``clustermesh.cilium.io/global: "true"``
and the Service has ``service.cilium.io/global: "true"``.

Pure data and rules: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from engine.domain.model import DomainModel

__all__ = [
    "ANNOTATION_NAMESPACE_GLOBAL",
    "ANNOTATION_SERVICE_GLOBAL",
    "ANNOTATION_SERVICE_SHARED",
    "AnnotationChange",
    "BackendSource",
    "ClusterServiceState",
    "GlobalService",
    "NetworkService",
    "RoutingView",
    "ServiceInCluster",
    "ServicesReport",
    "services_report",
]

#: Namespace annotation: with ``clustermesh-default-global-namespace: false`` a
#: namespace must carry it (``"true"``) for its services to be global.
ANNOTATION_NAMESPACE_GLOBAL = "clustermesh.cilium.io/global"


#: Service annotation: merge the backends of same-named services in every cluster.
ANNOTATION_SERVICE_GLOBAL = "service.cilium.io/global"


#: Service annotation: ``"false"`` = consume remote backends, export none (a drain).
ANNOTATION_SERVICE_SHARED = "service.cilium.io/shared"


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


# --- a network's global services report -----------------------------------------------


class ServiceInCluster(DomainModel):
    """One cluster's copy of a service: endpoints and whether it is really shared."""

    cluster: str
    ready_endpoints: int
    endpoints: int
    service_global: bool
    namespace_global: bool
    shared: bool

    @property
    def effective(self) -> bool:
        """Shared with the mesh: both annotations, and not drained."""
        return self.service_global and self.namespace_global and self.shared


class NetworkService(DomainModel):
    """A service annotated global in at least one member."""

    namespace: str
    name: str
    clusters: list[ServiceInCluster] = Field(default_factory=list)
    #: Mistakes worth a person's attention (e.g. a global service in a non-global namespace).
    problems: list[str] = Field(default_factory=list)


class ServicesReport(DomainModel):
    """Every global service of a network, with endpoints per cluster and flagged mistakes."""

    network: str
    services: list[NetworkService] = Field(default_factory=list)


def services_report(network: str, services: Sequence[GlobalService]) -> ServicesReport:
    """Summarize the backend's view and flag global services in non-global namespaces.

    With ``clustermesh-default-global-namespace: false`` a service annotated
    global in a namespace without ``clustermesh.cilium.io/global: "true"`` is
    silently not shared: the mistake this report exists to catch.
    """
    report = ServicesReport(network=network)
    for service in sorted(services, key=lambda s: (s.namespace, s.name)):
        entry = NetworkService(namespace=service.namespace, name=service.name)
        for cluster, state in sorted(service.per_cluster.items()):
            in_cluster = ServiceInCluster(
                cluster=cluster,
                ready_endpoints=state.ready_endpoints,
                endpoints=state.endpoints,
                service_global=state.annotations.get(ANNOTATION_SERVICE_GLOBAL) == "true",
                namespace_global=(
                    state.namespace_annotations.get(ANNOTATION_NAMESPACE_GLOBAL) == "true"
                ),
                shared=state.shared,
            )
            entry.clusters.append(in_cluster)
            if in_cluster.service_global and not in_cluster.namespace_global:
                entry.problems.append(
                    f"in {cluster!r} the service is annotated {ANNOTATION_SERVICE_GLOBAL}="
                    f'"true" but namespace {service.namespace!r} lacks '
                    f'{ANNOTATION_NAMESPACE_GLOBAL}="true": it is not shared '
                    "(clustermesh-default-global-namespace is false)"
                )
        report.services.append(entry)
    return report
