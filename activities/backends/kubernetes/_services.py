"""Global services: their state and routing in every member, and annotating them.

Routing is what the agents' datapath holds (``cilium-dbg service list -o json``),
attributed to members by pod CIDR. Annotation changes go through
:func:`engine.domain.drain.plan_annotations`, so a drain records on the Service
what it replaced and a restore is exact after any crash.

Does I/O (Kubernetes API calls, execs in agent pods).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from activities.backends.kubernetes import _api as calls
from activities.backends.kubernetes._api import CILIUM_CONFIG, KUBE_SYSTEM, KubeObject
from activities.backends.kubernetes._base import (
    AGENT_CONTAINER,
    AGENT_SELECTOR,
    BackendState,
    running_agents,
)
from activities.backends.kubernetes._exec import SERVICE_LIST_COMMAND, ExecTarget
from activities.backends.kubernetes._objects import (
    endpoint_counts,
    meta,
    owner_of,
    parse_service_table,
    pod_cidrs,
)
from engine.domain.backend import ClusterUnavailableError, OperationConflictError
from engine.domain.drain import plan_annotations
from engine.domain.errors import NotFoundError
from engine.domain.services import (
    AnnotationChange,
    BackendSource,
    ClusterServiceState,
    GlobalService,
    RoutingView,
)

log = structlog.get_logger(__name__)


#: Service annotation: ready endpoints a global service needs from every viewpoint.
ANNOTATION_MIN_READY_ENDPOINTS = "meshfleet.io/min-ready-endpoints"

#: How many answered annotation changes are remembered for same-process retries.
_MAX_REMEMBERED = 1024
#: One agent's service table: active backend IPs per ``(namespace, name)``.
ServiceTable = dict[tuple[str, str], set[str]]


@dataclass(frozen=True)
class _ServiceCopy:
    """One member's copy of a Service: its state, and the minimum of ready endpoints it asks."""

    state: ClusterServiceState
    min_ready: int | None


class MeshServices(BackendState):
    """Reading global services across members and annotating Services and Namespaces."""

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
        running = running_agents(pods)
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
        """Set or remove service annotations; a drain records what it replaces (see
        :func:`engine.domain.drain.plan_annotations`)."""
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
