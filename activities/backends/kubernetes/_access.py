"""The access file: how the worker reaches each member (never sent to Temporal).

A YAML file the worker reads at start. It names, per member, either a
kubeconfig context, or a Cluster API ``Cluster`` on a management cluster whose
kubeconfig Cluster API keeps in the Secret ``<cluster>-kubeconfig`` (key
``value``); members may also be discovered on a management cluster by label
selector. The file holds references only: credentials stay in kubeconfigs and
Secrets, and no error or log line here ever includes their content.

:class:`ClusterClients` turns a member name into a :class:`ClusterApi`. Does I/O
(reads kubeconfig files, and Secrets and Clusters on management clusters).

An example (relative paths are relative to the access file)::

    kubeconfig: kubeconfig            # default: $KUBECONFIG or ~/.kube/config
    requestTimeout: 30s
    controlPlaneUpgradeTimeout: 1h    # not done by then: failed as stuck
    ciliumUpgradeTimeout: 30m
    execConcurrency: 8                # execs into agent pods at once, across all members
    members:
      - name: ap-south-1              # the Cilium cluster name
        context: ap-south-1-admin     # a context of the kubeconfig
        updateGroup: canary
        cilium: providerManaged       # auto (default) | helmChartProxy | providerManaged
        mesh: connectionSecrets       # auto (default) | connectionSecrets
      - name: eu-north-1
        clusterAPI:                   # kubeconfig from Secret fleet/eu-north-1-kubeconfig
          managementContext: capi-mgmt
          namespace: fleet
          cluster: eu-north-1
    discover:                         # every matching Cluster API Cluster is a member
      - managementContext: capi-mgmt
        namespace: fleet              # all namespaces when omitted
        labelSelector: meshfleet.io/fleet=prod
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import enum
import os
import time
from pathlib import Path

import structlog
import yaml
from kubernetes import config as kube_config
from kubernetes.client import ApiClient
from pydantic import Field, ValidationError, model_validator

from activities.backends.kubernetes._api import (
    GET_KUBECONFIG_SECRET,
    KUBECONFIG_SECRET,
    LIST_CLUSTERS,
    ClusterApi,
    KubeObject,
    Scope,
)
from activities.backends.kubernetes._objects import meta
from engine.domain.durations import Duration
from engine.domain.errors import (
    FieldError,
    InvalidInputError,
    NotFoundError,
    field_errors_from_pydantic,
)
from engine.domain.model import DomainModel
from engine.domain.windows import MaintenanceWindow

__all__ = [
    "CiliumManagement",
    "ClusterApiRef",
    "ClusterClients",
    "Discovery",
    "KubernetesAccess",
    "MemberAccess",
    "MemberTarget",
    "MeshConfig",
    "load_access",
]

log = structlog.get_logger(__name__)

#: Cluster label read as the member's update group (Fleet's member ``group``).
LABEL_UPDATE_GROUP = "meshfleet.io/update-group"


class CiliumManagement(str, enum.Enum):
    """Who installs Cilium on a member, hence how its bundled Cilium is upgraded."""

    #: A HelmChartProxy selecting the Cluster if there is one, else provider-managed
    #: if the agent DaemonSet says so, else an error naming the member.
    AUTO = "auto"
    #: Cluster API add-on provider for Helm: set the HelmChartProxy's ``spec.version``.
    HELM_CHART_PROXY = "helmChartProxy"
    #: Bundled with the Kubernetes release (AKS): verify it arrived with the control plane.
    PROVIDER_MANAGED = "providerManaged"


class MeshConfig(str, enum.Enum):
    """How joining and leaving configure a member's mesh connections."""

    #: A member's own HelmChartProxy gets the mesh values; otherwise its Cilium
    #: install must list the peers itself (meshfleet checks, does not write).
    AUTO = "auto"
    #: Write the connection entries into the member's Secret the way
    #: ``cilium clustermesh connect`` does (for installs no Helm chart renders).
    CONNECTION_SECRETS = "connectionSecrets"


class ClusterApiRef(DomainModel):
    """A Cluster API ``Cluster``: where it lives and what it is called."""

    management_context: str = Field(min_length=1)
    namespace: str = Field(min_length=1)
    cluster: str = Field(min_length=1)


class MemberAccess(DomainModel):
    """One member: a kubeconfig context, or a Cluster API reference."""

    name: str = Field(min_length=1)
    context: str | None = None
    cluster_api: ClusterApiRef | None = Field(default=None, alias="clusterAPI")
    #: Overrides the file-wide kubeconfig for this member's context.
    kubeconfig: Path | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    update_group: str | None = None
    maintenance_window: MaintenanceWindow | None = None
    cilium: CiliumManagement = CiliumManagement.AUTO
    mesh: MeshConfig = MeshConfig.AUTO

    @model_validator(mode="after")
    def _one_way_in(self) -> MemberAccess:
        if (self.context is None) == (self.cluster_api is None):
            raise ValueError("give exactly one of 'context' or 'clusterAPI'")
        return self


class Discovery(DomainModel):
    """Members found on a management cluster: every ``Cluster`` matching a label selector."""

    management_context: str = Field(min_length=1)
    #: All namespaces when omitted.
    namespace: str | None = None
    label_selector: str = Field(min_length=1)
    cilium: CiliumManagement = CiliumManagement.AUTO
    mesh: MeshConfig = MeshConfig.AUTO


class KubernetesAccess(DomainModel):
    """The whole access file (``meshfleet worker --backend kubernetes --access FILE``)."""

    #: Kubeconfig for every context named here; default ``$KUBECONFIG`` or ``~/.kube/config``.
    kubeconfig: Path | None = None
    members: list[MemberAccess] = Field(default_factory=list)
    discover: list[Discovery] = Field(default_factory=list)
    #: Per API request (seconds, or '30s').
    request_timeout: Duration = Field(default_factory=lambda: _seconds(30))
    #: A control-plane upgrade not done by then is failed as stuck.
    control_plane_upgrade_timeout: Duration = Field(default_factory=lambda: _seconds(3600))
    #: A bundled-Cilium rollout not done by then is failed as stuck.
    cilium_upgrade_timeout: Duration = Field(default_factory=lambda: _seconds(1800))
    #: Execs into agent pods running at once (one poll asks every agent once).
    exec_concurrency: int = Field(default=8, ge=1, le=64)

    @model_validator(mode="after")
    def _unique_names(self) -> KubernetesAccess:
        seen: set[str] = set()
        for member in self.members:
            if member.name in seen:
                raise ValueError(f"member {member.name!r} is listed twice")
            seen.add(member.name)
        return self

    def kubeconfig_path(self, member: MemberAccess | None = None) -> Path | None:
        """The kubeconfig to use for ``member``'s context (or for management contexts)."""
        return (member.kubeconfig if member else None) or self.kubeconfig


def _seconds(value: float) -> dt.timedelta:
    return dt.timedelta(seconds=value)


def load_access(path: Path) -> KubernetesAccess:
    """Read and validate an access file; every problem is reported with its field path.

    Relative kubeconfig paths are relative to the access file. Errors name
    fields and files, never their content.
    """
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidInputError(
            [FieldError(path="", message=f"cannot read the access file ({error.strerror})")],
            source=source,
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        # The YAML error's own text quotes the file; the file may hold a pasted secret.
        raise InvalidInputError(
            [FieldError(path="", message=f"not valid YAML{where}")], source=source
        ) from None
    if not isinstance(raw, dict):
        raise InvalidInputError(
            [FieldError(path="", message="must be a mapping with 'members' and/or 'discover'")],
            source=source,
        )
    try:
        access = KubernetesAccess.model_validate(raw)
    except ValidationError as error:
        raise InvalidInputError(field_errors_from_pydantic(error), source=source) from None
    base = path.parent
    problems: list[FieldError] = []
    if access.kubeconfig is not None:
        access.kubeconfig = _resolve(access.kubeconfig, base)
    for member in access.members:
        if member.kubeconfig is not None:
            member.kubeconfig = _resolve(member.kubeconfig, base)
    if not access.members and not access.discover:
        problems.append(FieldError(path="members", message="no members and no 'discover' rule"))
    problems.extend(_context_problems(access))
    if problems:
        raise InvalidInputError(problems, source=source)
    return access


def _resolve(path: Path, base: Path) -> Path:
    expanded = path.expanduser()
    return expanded if expanded.is_absolute() else base / expanded


def _default_kubeconfig() -> Path:
    env = os.environ.get("KUBECONFIG", "")
    first = env.split(os.pathsep)[0] if env else ""
    return Path(first).expanduser() if first else Path.home() / ".kube" / "config"


def _context_names(path: Path) -> set[str] | str:
    """The context names of a kubeconfig, or why it cannot be read (no content quoted)."""
    try:
        contexts, _ = kube_config.list_kube_config_contexts(config_file=str(path))  # type: ignore[no-untyped-call]
    except FileNotFoundError:
        return f"kubeconfig {path} does not exist"
    except Exception as error:
        return f"kubeconfig {path} cannot be read ({type(error).__name__})"
    return {str(c.get("name")) for c in contexts or []}


def _context_problems(access: KubernetesAccess) -> list[FieldError]:
    """Every context the file names must exist in the kubeconfig it will be read from."""
    wanted: list[tuple[str, str, Path]] = []
    for index, member in enumerate(access.members):
        kubeconfig = access.kubeconfig_path(member) or _default_kubeconfig()
        if member.context is not None:
            wanted.append((f"members[{index}].context", member.context, kubeconfig))
        if member.cluster_api is not None:
            wanted.append(
                (
                    f"members[{index}].clusterAPI.managementContext",
                    member.cluster_api.management_context,
                    access.kubeconfig or _default_kubeconfig(),
                )
            )
    for index, rule in enumerate(access.discover):
        wanted.append(
            (
                f"discover[{index}].managementContext",
                rule.management_context,
                access.kubeconfig or _default_kubeconfig(),
            )
        )
    problems: list[FieldError] = []
    cache: dict[Path, set[str] | str] = {}
    for field, context, kubeconfig in wanted:
        names = cache.setdefault(kubeconfig, _context_names(kubeconfig))
        if isinstance(names, str):
            problems.append(FieldError(path=field, message=names))
        elif context not in names:
            problems.append(
                FieldError(path=field, message=f"context {context!r} is not in {kubeconfig}")
            )
    return problems


# --- resolving members to API clients ------------------------------------------------------


class MemberTarget(DomainModel):
    """A member resolved: how to reach it, and what the access file says about it."""

    name: str
    context: str | None = None
    kubeconfig: Path | None = None
    cluster_api: ClusterApiRef | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    update_group: str | None = None
    maintenance_window: MaintenanceWindow | None = None
    cilium: CiliumManagement = CiliumManagement.AUTO
    mesh: MeshConfig = MeshConfig.AUTO


class ClusterClients:
    """Member and management-cluster API clients, built lazily and cached.

    Members found by a ``discover`` rule are refreshed at most every
    ``discovery_ttl`` seconds (and at once when an unknown name is asked for).
    """

    def __init__(self, access: KubernetesAccess, *, discovery_ttl: float = 30.0) -> None:
        self.access = access
        self._timeout = access.request_timeout.total_seconds()
        self._explicit = {m.name: _target(m, access) for m in access.members}
        self._discovered: dict[str, MemberTarget] = {}
        self._discovered_at: float | None = None
        self._discovery_ttl = discovery_ttl
        self._management: dict[str, ClusterApi] = {}
        self._members: dict[str, ClusterApi] = {}
        self._lock = asyncio.Lock()

    async def target(self, name: str) -> MemberTarget:
        """How to reach member ``name``. NotFoundError when the access file knows no such member."""
        if name in self._explicit:
            return self._explicit[name]
        if self.access.discover and (
            name not in self._discovered
            or self._discovered_at is None
            or time.monotonic() - self._discovered_at > self._discovery_ttl
        ):
            await self.discover()
        if name in self._discovered:
            return self._discovered[name]
        raise NotFoundError(f"cluster {name!r} is not in the Kubernetes access file")

    async def names(self) -> list[str]:
        """Every member the access file lists or discovers."""
        if self.access.discover:
            await self.discover()
        return sorted(set(self._explicit) | set(self._discovered))

    async def discover(self) -> None:
        """Refresh members from every ``discover`` rule (Cluster API ``Cluster`` objects)."""
        found: dict[str, MemberTarget] = {}
        for rule in self.access.discover:
            api = await self.management(rule.management_context)
            for item in await api.list(
                LIST_CLUSTERS, namespace=rule.namespace, label_selector=rule.label_selector
            ):
                name = str(item["metadata"]["name"])
                ref = ClusterApiRef(
                    management_context=rule.management_context,
                    namespace=str(item["metadata"].get("namespace") or "default"),
                    cluster=name,
                )
                labels = meta(item, "labels")
                found.setdefault(
                    name,
                    MemberTarget(
                        name=name,
                        cluster_api=ref,
                        labels=labels,
                        update_group=labels.get(LABEL_UPDATE_GROUP),
                        cilium=rule.cilium,
                        mesh=rule.mesh,
                    ),
                )
        self._discovered = found
        self._discovered_at = time.monotonic()
        log.debug("kubernetes.discovered", members=sorted(found))

    async def management(self, context: str) -> ClusterApi:
        """The API of a management cluster, by kubeconfig context."""
        async with self._lock:
            if context not in self._management:
                path = self.access.kubeconfig_path()
                client = await asyncio.to_thread(_client_from_context, context, path)
                self._management[context] = ClusterApi(
                    context, client, scope=Scope.MANAGEMENT, request_timeout=self._timeout
                )
            return self._management[context]

    async def member(self, name: str) -> ClusterApi:
        """Member ``name``'s API (NotFoundError if unknown, ClusterUnavailable if unreachable)."""
        async with self._lock:
            cached = self._members.get(name)
        if cached is not None:
            return cached
        target = await self.target(name)
        if target.context is not None:
            client = await asyncio.to_thread(
                _client_from_context, target.context, target.kubeconfig
            )
        else:
            assert target.cluster_api is not None
            client = await self._client_from_cluster_api(name, target.cluster_api)
        api = ClusterApi(name, client, scope=Scope.MEMBER, request_timeout=self._timeout)
        async with self._lock:
            self._members[name] = api
        return api

    def forget(self, name: str) -> None:
        """Drop a cached member client (its kubeconfig may have been rotated)."""
        self._members.pop(name, None)

    async def _client_from_cluster_api(self, name: str, ref: ClusterApiRef) -> ApiClient:
        api = await self.management(ref.management_context)
        secret_name = KUBECONFIG_SECRET.format(cluster=ref.cluster)
        secret = await api.get(GET_KUBECONFIG_SECRET, secret_name, namespace=ref.namespace)
        where = f"Secret {ref.namespace}/{secret_name} on {ref.management_context!r}"
        if secret is None:
            raise NotFoundError(f"cluster {name!r}: {where} does not exist")
        encoded = (secret.get("data") or {}).get("value")
        if not encoded:
            raise NotFoundError(f"cluster {name!r}: {where} has no key 'value'")
        try:
            config_dict = yaml.safe_load(base64.b64decode(str(encoded)).decode("utf-8"))
        except (binascii.Error, UnicodeDecodeError, yaml.YAMLError):
            raise InvalidInputError(
                [FieldError(path="", message=f"{where} does not hold a kubeconfig")],
                source=name,
            ) from None
        if not isinstance(config_dict, dict):
            raise InvalidInputError(
                [FieldError(path="", message=f"{where} does not hold a kubeconfig")], source=name
            )
        return await asyncio.to_thread(_client_from_dict, config_dict, where, name)


def _target(member: MemberAccess, access: KubernetesAccess) -> MemberTarget:
    return MemberTarget(
        name=member.name,
        context=member.context,
        kubeconfig=access.kubeconfig_path(member),
        cluster_api=member.cluster_api,
        labels=member.labels,
        update_group=member.update_group,
        maintenance_window=member.maintenance_window,
        cilium=member.cilium,
        mesh=member.mesh,
    )


def _client_from_context(context: str, kubeconfig: Path | None) -> ApiClient:
    path = kubeconfig or _default_kubeconfig()
    try:
        client: ApiClient = kube_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(path), context=context
        )
        return client
    except Exception as error:
        # The loader's messages may quote the kubeconfig; say which context failed and how.
        raise InvalidInputError(
            [
                FieldError(
                    path="",
                    message=f"context {context!r} in {path} is not usable ({type(error).__name__})",
                )
            ],
            source=str(path),
        ) from None


def _client_from_dict(config_dict: KubeObject, where: str, name: str) -> ApiClient:
    try:
        client: ApiClient = kube_config.new_client_from_config_dict(config_dict)  # type: ignore[no-untyped-call]
        return client
    except Exception as error:
        raise InvalidInputError(
            [
                FieldError(
                    path="",
                    message=f"the kubeconfig in {where} is not usable ({type(error).__name__})",
                )
            ],
            source=name,
        ) from None
