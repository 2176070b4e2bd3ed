"""Every Kubernetes API call the backend makes, declared once, and the wrapper that makes them.

The backend never calls the ``kubernetes`` client's generated methods directly:
each request goes through :class:`ClusterApi`, which only accepts an
:class:`ApiCall` declared in this module. :data:`API_CALLS` is therefore the
complete list of what the worker does on management and member clusters, and
the RBAC the worker needs is derived from it (:func:`rbac_rules`), not kept as
a hand-written list.

Errors are mapped here and nowhere else: an unreachable API server (or a 5xx,
or 429) becomes :class:`ClusterUnavailableError` (retryable); 401/403 become a
non-retryable :class:`KubernetesAccessError`. No message ever carries a
response body, a header or any credential; only the call, the object and the
HTTP status.

Does I/O: blocking client calls run in a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import enum
import fnmatch
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import structlog
from kubernetes.client import ApiClient

from engine.domain.backend import ClusterUnavailableError
from engine.domain.errors import MeshfleetError, NotFoundError, Retry

__all__ = [
    "API_CALLS",
    "ApiCall",
    "ClusterApi",
    "KubernetesAccessError",
    "KubernetesApiError",
    "KubernetesConflictError",
    "Scope",
    "rbac_rules",
    "read_modify_write",
    "resource_version",
]

log = structlog.get_logger(__name__)

#: Kubernetes object (a parsed JSON mapping, as the API returns it).
KubeObject = dict[str, Any]


class Scope(str, enum.Enum):
    """Which cluster a call is made on: a Cluster API management cluster or a mesh member."""

    MANAGEMENT = "management"
    MEMBER = "member"


class ApiCall(NamedTuple):
    """One kind of request: on which cluster, which API group and resource, which verb.

    ``resource`` is the plural (``services``), a subresource (``pods/exec``) or,
    with an empty group and a leading slash, a non-resource URL (``/version``).
    """

    scope: Scope
    group: str
    version: str
    resource: str
    verb: str
    #: The one namespace the call is made in (member clusters), or None: any namespace,
    #: or cluster-scoped. Management calls are made in the access file's Cluster API
    #: namespaces, whatever this says.
    namespace: str | None = None
    #: The only objects the call names (``{cluster}`` stands for each Cluster API
    #: member's cluster name), or empty: any object. Lists and creates name none.
    names: tuple[str, ...] = ()
    #: Why the worker needs it, one line (a comment in the generated RBAC).
    why: str = ""

    @property
    def namespaced(self) -> bool:
        return self.resource not in _CLUSTER_SCOPED

    def allows(self, namespace: str | None, name: str | None) -> bool:
        """Whether a request on ``namespace``/``name`` stays inside what is declared."""
        if self.namespace is not None and namespace != self.namespace:
            return False
        if not self.names or name is None:
            return True
        return any(fnmatch.fnmatchcase(name, n.format(cluster="*")) for n in self.names)

    def describe(self) -> str:
        """``get services`` / ``patch clusters.cluster.x-k8s.io``: for messages and logs."""
        name = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {name}"


_CLUSTER_SCOPED = frozenset({"nodes", "namespaces", "/version"})
_DECLARED: list[ApiCall] = []


def _declare(
    scope: Scope,
    group: str,
    version: str,
    resource: str,
    verb: str,
    *,
    namespace: str | None = None,
    names: tuple[str, ...] = (),
    why: str = "",
) -> ApiCall:
    call = ApiCall(scope, group, version, resource, verb, namespace, names, why)
    _DECLARED.append(call)
    return call


M, W = Scope.MANAGEMENT, Scope.MEMBER
CAPI, CONTROLPLANE, ADDONS = (
    "cluster.x-k8s.io",
    "controlplane.cluster.x-k8s.io",
    "addons.cluster.x-k8s.io",
)

# --- the objects the backend names ------------------------------------------------------
KUBE_SYSTEM = "kube-system"
CILIUM_CONFIG = "cilium-config"
CILIUM_AGENT = "cilium"
CILIUM_OPERATOR = "cilium-operator"
CLUSTERMESH_APISERVER = "clustermesh-apiserver"
CLUSTERMESH_SECRET = "cilium-clustermesh"
KVSTOREMESH_SECRET = "cilium-kvstoremesh"
#: The client certificate a member presents to its peers (Cilium projects it as common-*).
REMOTE_CERT_SECRET = "clustermesh-apiserver-remote-cert"
SERVER_CERT_SECRET = "clustermesh-apiserver-server-cert"
#: The Secret in which Cluster API keeps each workload cluster's admin kubeconfig.
KUBECONFIG_SECRET = "{cluster}-kubeconfig"

# --- management cluster (Cluster API) ----------------------------------------------------
LIST_CLUSTERS = _declare(M, CAPI, "v1beta1", "clusters", "list", why="find the members")
GET_CLUSTER = _declare(M, CAPI, "v1beta1", "clusters", "get", why="versions and records")
PATCH_CLUSTER = _declare(
    M,
    CAPI,
    "v1beta1",
    "clusters",
    "patch",
    why="control-plane version, operation records",
)
GET_KUBEADM_CONTROL_PLANE = _declare(
    M, CONTROLPLANE, "v1beta1", "kubeadmcontrolplanes", "get", why="control-plane rollout"
)
LIST_HELM_CHART_PROXIES = _declare(
    M, ADDONS, "v1alpha1", "helmchartproxies", "list", why="find the Cilium HelmChartProxy"
)
GET_HELM_CHART_PROXY = _declare(
    M, ADDONS, "v1alpha1", "helmchartproxies", "get", why="chart version and values"
)
PATCH_HELM_CHART_PROXY = _declare(
    M,
    ADDONS,
    "v1alpha1",
    "helmchartproxies",
    "patch",
    why="chart version; the mesh values meshfleet owns",
)
GET_KUBECONFIG_SECRET = _declare(
    M, "", "v1", "secrets", "get", names=(KUBECONFIG_SECRET,), why="reach each member"
)

# --- member clusters ---------------------------------------------------------------------
GET_VERSION = _declare(W, "", "", "/version", "get", why="the running Kubernetes version")
LIST_NODES = _declare(W, "", "v1", "nodes", "list", why="node versions, pod CIDRs, NodePort IPs")
GET_DAEMONSET = _declare(
    W,
    "apps",
    "v1",
    "daemonsets",
    "get",
    namespace=KUBE_SYSTEM,
    names=(CILIUM_AGENT,),
    why="the Cilium agent rollout",
)
GET_DEPLOYMENT = _declare(
    W,
    "apps",
    "v1",
    "deployments",
    "get",
    namespace=KUBE_SYSTEM,
    names=(CILIUM_OPERATOR, CLUSTERMESH_APISERVER),
    why="operator and clustermesh-apiserver rollouts",
)
GET_CONFIGMAP = _declare(
    W,
    "",
    "v1",
    "configmaps",
    "get",
    namespace=KUBE_SYSTEM,
    names=(CILIUM_CONFIG,),
    why="cluster name and id",
)
PATCH_CONFIGMAP = _declare(
    W,
    "",
    "v1",
    "configmaps",
    "patch",
    namespace=KUBE_SYSTEM,
    names=(CILIUM_CONFIG,),
    why="the network claim label; operation records of members without Cluster API",
)
GET_SECRET = _declare(
    W,
    "",
    "v1",
    "secrets",
    "get",
    namespace=KUBE_SYSTEM,
    names=(CLUSTERMESH_SECRET, KVSTOREMESH_SECRET, REMOTE_CERT_SECRET, SERVER_CERT_SECRET),
    why="the connections, and the CA certificates compared before connecting",
)
PATCH_SECRET = _declare(
    W,
    "",
    "v1",
    "secrets",
    "patch",
    namespace=KUBE_SYSTEM,
    names=(CLUSTERMESH_SECRET, KVSTOREMESH_SECRET),
    why="the connections, in connectionSecrets mode only",
)
LIST_PODS = _declare(
    W, "", "v1", "pods", "list", namespace=KUBE_SYSTEM, why="the agent pods (by label)"
)
EXEC_POD = _declare(
    W,
    "",
    "v1",
    "pods/exec",
    "create",
    namespace=KUBE_SYSTEM,
    why="cilium-dbg status and service list in the agents",
)
# Exec is a websocket upgrade of a GET: API servers before 1.30 authorize it as `get`.
_declare(
    W,
    "",
    "v1",
    "pods/exec",
    "get",
    namespace=KUBE_SYSTEM,
    why="the same exec, as API servers before 1.30 authorize it",
)
LIST_NAMESPACES = _declare(W, "", "v1", "namespaces", "list", why="global namespaces")
GET_NAMESPACE = _declare(W, "", "v1", "namespaces", "get", why="drain annotations")
PATCH_NAMESPACE = _declare(
    W, "", "v1", "namespaces", "patch", why="drain annotations, set and restored"
)
LIST_SERVICES = _declare(W, "", "v1", "services", "list", why="global Services")
GET_SERVICE = _declare(
    W, "", "v1", "services", "get", why="global Services; the clustermesh-apiserver address"
)
PATCH_SERVICE = _declare(
    W, "", "v1", "services", "patch", why="service.cilium.io/shared, set and restored on drain"
)
LIST_ENDPOINT_SLICES = _declare(
    W, "discovery.k8s.io", "v1", "endpointslices", "list", why="ready endpoints per Service"
)

#: Every call the backend can make, in declaration order.
API_CALLS: tuple[ApiCall, ...] = tuple(_DECLARED)


def rbac_rules(scope: Scope) -> list[tuple[str, str, tuple[str, ...]]]:
    """``(api_group, resource, verbs)`` the worker needs on one kind of cluster.

    Non-resource URLs (``/version``) are listed with their path as the resource.
    """
    verbs: dict[tuple[str, str], set[str]] = {}
    for call in API_CALLS:
        if call.scope is scope:
            verbs.setdefault((call.group, call.resource), set()).add(call.verb)
    return [(group, resource, tuple(sorted(v))) for (group, resource), v in verbs.items()]


# --- errors ------------------------------------------------------------------------------


class KubernetesApiError(MeshfleetError):
    """The API server refused a request; retrying the same request will not help."""

    retry = Retry.NON_RETRYABLE

    def __init__(self, cluster: str, call: ApiCall, target: str, status: int, reason: str) -> None:
        self.cluster = cluster
        self.status = status
        super().__init__(
            f"cluster {cluster!r}: {call.describe()} {target} failed: HTTP {status} {reason}"
        )


class KubernetesAccessError(KubernetesApiError):
    """Authentication or authorization failed (HTTP 401/403): fix the access file or RBAC."""


class KubernetesConflictError(KubernetesApiError):
    """HTTP 409: the object changed since it was read (its ``resourceVersion`` moved on).

    Read it again and recompute the change; :func:`read_modify_write` does that.
    """


# --- the wrapper -------------------------------------------------------------------------


class ClusterApi:
    """One cluster's API, spoken only through declared :class:`ApiCall`s.

    Holds the official client's :class:`ApiClient` (auth, TLS and server come from
    a kubeconfig) and never exposes its credentials.
    """

    def __init__(
        self,
        cluster: str,
        api_client: ApiClient,
        *,
        scope: Scope,
        request_timeout: float = 30.0,
    ) -> None:
        self.cluster = cluster
        self.scope = scope
        self.api_client = api_client
        self._timeout = (min(request_timeout, 10.0), request_timeout)
        #: Seconds one request (or one exec) may take.
        self.request_timeout = request_timeout

    def check(
        self,
        call: ApiCall,
        verb: str,
        *,
        namespace: str | None = None,
        name: str | None = None,
    ) -> None:
        """Refuse undeclared calls: :data:`API_CALLS` (verbs, namespaces, names) must stay
        the whole truth, since the generated RBAC grants exactly that."""
        if call not in API_CALLS or call.scope is not self.scope or call.verb != verb:
            raise AssertionError(f"undeclared API call {call} used as {verb!r} on {self.scope}")
        if not call.allows(namespace, name):
            raise AssertionError(
                f"{call.describe()} on {_target(namespace, name or '*')} is outside its "
                f"declaration (namespace {call.namespace}, names {call.names})"
            )

    async def version(self) -> KubeObject:
        """``GET /version``."""
        self.check(GET_VERSION, "get")
        found = await self._request(GET_VERSION, "GET", "/version", target="")
        assert found is not None
        return found

    async def get(
        self, call: ApiCall, name: str, *, namespace: str | None = None
    ) -> KubeObject | None:
        """One object, or None when it does not exist."""
        self.check(call, "get", namespace=namespace, name=name)
        return await self._request(
            call,
            "GET",
            _path(call, namespace, name),
            target=_target(namespace, name),
            missing_ok=True,
        )

    async def list(
        self,
        call: ApiCall,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[KubeObject]:
        """Every object (of one namespace, or of all), optionally by label selector."""
        self.check(call, "list", namespace=namespace)
        query = [("labelSelector", label_selector)] if label_selector else []
        found = await self._request(
            call, "GET", _path(call, namespace, None), query=query, target=namespace or "*"
        )
        items = (found or {}).get("items") or []
        return [item for item in items if isinstance(item, dict)]

    async def merge_patch(
        self,
        call: ApiCall,
        name: str,
        body: Mapping[str, Any],
        *,
        namespace: str | None = None,
        resource_version: str | None = None,
    ) -> KubeObject:
        """JSON merge patch (RFC 7386): ``None`` removes a key. NotFoundError if absent.

        With ``resource_version`` the patch applies only to that version of the
        object; if it changed since, :class:`KubernetesConflictError` (HTTP 409).
        """
        self.check(call, "patch", namespace=namespace, name=name)
        payload = dict(body)
        if resource_version is not None:
            metadata = dict(payload.get("metadata") or {})
            metadata["resourceVersion"] = resource_version
            payload["metadata"] = metadata
        found = await self._request(
            call,
            "PATCH",
            _path(call, namespace, name),
            body=payload,
            content_type="application/merge-patch+json",
            target=_target(namespace, name),
            missing_ok=True,
        )
        if found is None:
            raise NotFoundError(
                f"cluster {self.cluster!r}: {call.resource} {_target(namespace, name)} not found"
            )
        return found

    async def _request(
        self,
        call: ApiCall,
        method: str,
        path: str,
        *,
        target: str,
        query: Sequence[tuple[str, str]] = (),
        body: dict[str, Any] | None = None,
        content_type: str | None = None,
        missing_ok: bool = False,
    ) -> KubeObject | None:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type

        def blocking() -> tuple[int, bytes]:
            request = self.api_client.param_serialize(
                method=method,
                resource_path=path,
                query_params=list(query),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self.api_client.call_api(*request, _request_timeout=self._timeout)
            response.read()  # type: ignore[no-untyped-call]
            return int(response.status), bytes(response.data or b"")

        try:
            status, data = await asyncio.to_thread(blocking)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # Refused, DNS, TLS, timeouts: the message may name hosts; keep only the type.
            log.info(
                "kubernetes.unreachable",
                cluster=self.cluster,
                call=call.describe(),
                error_type=type(error).__name__,
            )
            raise ClusterUnavailableError(
                self.cluster, f"API server unreachable ({type(error).__name__})"
            ) from None
        if 200 <= status <= 299:
            parsed = json.loads(data) if data else {}
            return parsed if isinstance(parsed, dict) else {"items": parsed}
        if status == 404 and missing_ok:
            return None
        reason = _status_reason(data)
        log.info(
            "kubernetes.request_failed",
            cluster=self.cluster,
            call=call.describe(),
            target=target,
            status=status,
            reason=reason,
        )
        if status in (429,) or status >= 500:
            raise ClusterUnavailableError(self.cluster, f"{call.describe()} got HTTP {status}")
        if status in (401, 403):
            raise KubernetesAccessError(self.cluster, call, target, status, reason)
        if status == 404:
            raise NotFoundError(f"cluster {self.cluster!r}: {call.resource} {target} not found")
        if status == 409:
            raise KubernetesConflictError(self.cluster, call, target, status, reason)
        raise KubernetesApiError(self.cluster, call, target, status, reason)


def resource_version(obj: Mapping[str, Any]) -> str | None:
    """``metadata.resourceVersion`` (None when the server gave none)."""
    value = (obj.get("metadata") or {}).get("resourceVersion")
    return str(value) if value is not None else None


#: Attempts of one read-modify-write before a conflict is reported (contention is rare).
CONFLICT_ATTEMPTS = 8


async def read_modify_write(
    api: ClusterApi,
    get: ApiCall,
    patch: ApiCall,
    name: str,
    change: Callable[[KubeObject], Mapping[str, Any] | None],
    *,
    namespace: str | None = None,
) -> KubeObject | None:
    """Read the object, compute a merge patch from what was read, apply it only to that version.

    ``change`` returns the patch, or None when nothing needs changing (then the
    object as read is returned). On a conflict the object is read again and
    ``change`` asked again, so a decision is always taken on the latest state.
    Returns the patched object; None when the object does not exist.
    """
    for attempt in range(CONFLICT_ATTEMPTS):
        obj = await api.get(get, name, namespace=namespace)
        if obj is None:
            return None
        body = change(obj)
        if body is None:
            return obj
        try:
            return await api.merge_patch(
                patch, name, body, namespace=namespace, resource_version=resource_version(obj)
            )
        except KubernetesConflictError:
            log.info(
                "kubernetes.conflict_retried",
                cluster=api.cluster,
                call=patch.describe(),
                target=_target(namespace, name),
                attempt=attempt + 1,
            )
    raise KubernetesConflictError(
        api.cluster, patch, _target(namespace, name), 409, "Conflict (still changing)"
    )


def _path(call: ApiCall, namespace: str | None, name: str | None) -> str:
    if call.resource.startswith("/"):
        return call.resource
    base = f"/api/{call.version}" if not call.group else f"/apis/{call.group}/{call.version}"
    plural = call.resource.split("/")[0]
    if namespace is not None and call.namespaced:
        base += f"/namespaces/{namespace}"
    path = f"{base}/{plural}"
    return f"{path}/{name}" if name is not None else path


def _target(namespace: str | None, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


def _status_reason(data: bytes) -> str:
    """The ``reason`` word of a Kubernetes Status (``Forbidden``, ``Conflict``), nothing else."""
    try:
        parsed = json.loads(data)
    except ValueError:
        return "(no status)"
    reason = parsed.get("reason") if isinstance(parsed, dict) else None
    return str(reason)[:60] if reason else "(no reason)"
