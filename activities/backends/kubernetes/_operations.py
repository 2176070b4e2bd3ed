"""Long-running operations: their records on the cluster, and their progress read from it.

A control plane upgrade, a Cilium upgrade and a mesh enablement are each
recorded (idempotency key, target, start time, outcome) in the JSON annotation
``meshfleet.io/operations`` on the member's Cluster API ``Cluster`` (or, for
members reached by kubeconfig context, on ``cilium-config``), so any worker
can follow an operation another one started. Progress is read from the
objects the controllers move (KubeadmControlPlane, Cilium's workloads).

Does I/O (Kubernetes API calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import Field, ValidationError

from activities.backends.kubernetes import _api as calls
from activities.backends.kubernetes._access import CiliumManagement, MemberTarget
from activities.backends.kubernetes._api import (
    CILIUM_AGENT,
    CILIUM_CONFIG,
    CILIUM_OPERATOR,
    CLUSTERMESH_APISERVER,
    KUBE_SYSTEM,
    ClusterApi,
    KubeObject,
)
from activities.backends.kubernetes._base import AGENT_CONTAINER, BackendState, now
from activities.backends.kubernetes._objects import (
    apiserver_endpoint,
    condition,
    daemonset_rollout,
    deployment_rollout,
    meta,
)
from engine.domain.backend import (
    ClusterUnavailableError,
    OperationConflictError,
    OperationInProgressError,
    OperationKind,
    OperationProgress,
    OperationState,
)
from engine.domain.errors import MeshfleetError, NotFoundError
from engine.domain.mesh import RolloutStatus
from engine.domain.model import DomainModel
from engine.domain.versions import Version

log = structlog.get_logger(__name__)


#: JSON map idempotency key -> operation record, on the Cluster (or ``cilium-config``).
ANNOTATION_OPERATIONS = "meshfleet.io/operations"

_MAX_RECORDS = 20


class ControlPlaneUpgradeNotPossibleError(MeshfleetError):
    """The member's control plane cannot be upgraded by meshfleet as configured."""


class _OperationRecord(DomainModel):
    """What meshfleet started, kept on the cluster so any worker can follow it."""

    key: str
    kind: OperationKind
    target_version: str | None = None
    started_at: dt.datetime
    #: Set once the outcome is final (then it never changes).
    state: OperationState | None = None
    finished_at: dt.datetime | None = None
    message: str | None = None
    #: Cilium upgrades: how Cilium is managed, and the HelmChartProxy patched.
    mode: CiliumManagement | None = None
    helm_chart_proxy: str | None = None
    extra: dict[str, str] = Field(default_factory=dict)


@dataclass(frozen=True)
class _Holder:
    """The object whose annotation keeps a member's operation records."""

    api: ClusterApi
    get: calls.ApiCall
    patch: calls.ApiCall
    namespace: str
    name: str


class OperationTracking(BackendState):
    """Starting control plane upgrades, and recording and following every long operation."""

    async def target_problem(
        self, cluster: str, kubernetes_version: str, cilium_version: str
    ) -> str | None:
        """Refuse a target without a patch number: Cluster API and Helm need ``vX.Y.Z``.

        Minor-only targets (``1.33``) are resolved to a concrete patch from the
        release catalog at plan time; one that reaches a member is refused here,
        at preflight, before the member is drained.
        """
        for what, text in (("Kubernetes", kubernetes_version), ("Cilium", cilium_version)):
            try:
                version = Version.parse(text)
            except ValueError as error:
                return f"cluster {cluster!r}: target {what} version {text!r} is not valid: {error}"
            if version.patch is None:
                return (
                    f"cluster {cluster!r}: target {what} version {text!r} has no patch number; "
                    "the Kubernetes backend upgrades to a concrete MAJOR.MINOR.PATCH (resolve "
                    "the target from the release catalog at plan time)"
                )
        return None

    async def start_control_plane_upgrade(
        self, cluster: str, target_version: str, *, idempotency_key: str
    ) -> OperationProgress:
        """Patch the Cluster's ``spec.topology.version``; Cluster API rolls the control plane."""
        version = full_version(cluster, target_version)
        target = await self.clients.target(cluster)
        if target.cluster_api is None:
            raise ControlPlaneUpgradeNotPossibleError(
                f"cluster {cluster!r} is reached by kubeconfig context, not through Cluster API; "
                "meshfleet upgrades control planes by patching the Cluster API Cluster "
                "(give it a 'clusterAPI' reference in the access file)"
            )
        holder = await self._holder(cluster)
        obj = await self._cluster_object(cluster, target)
        topology = (obj.get("spec") or {}).get("topology")
        if not topology:
            raise ControlPlaneUpgradeNotPossibleError(
                f"cluster {cluster!r}: Cluster {_ref(target)} has no spec.topology (it is not "
                "built from a ClusterClass), so its version cannot be set there"
            )
        current = str(topology.get("version") or "")
        if current and Version.parse(current) > version:
            raise ControlPlaneUpgradeNotPossibleError(
                f"cluster {cluster!r} is at {current.lstrip('v')}; control planes never move down "
                f"(asked for {version})"
            )
        record = await self._begin(
            holder,
            cluster,
            idempotency_key,
            OperationKind.CONTROL_PLANE_UPGRADE,
            str(version),
            spec={"spec": {"topology": {"version": f"v{version}"}}},
        )
        log.info(
            "kubernetes.control_plane_upgrade.started",
            cluster=cluster,
            key=idempotency_key,
            target=str(version),
            from_version=current,
        )
        return await self._progress(cluster, holder, record)

    async def get_operation(self, cluster: str, idempotency_key: str) -> OperationProgress:
        """The operation's progress, read from the cluster now."""
        holder = await self._holder(cluster)
        record = (await self._records(holder))[1].get(idempotency_key)
        if record is None:
            raise NotFoundError(f"cluster {cluster!r}: no operation with key {idempotency_key!r}")
        return await self._progress(cluster, holder, record)

    async def _holder(self, cluster: str) -> _Holder:
        target = await self.clients.target(cluster)
        if target.cluster_api is not None:
            ref = target.cluster_api
            api = await self.clients.management(ref.management_context)
            return _Holder(api, calls.GET_CLUSTER, calls.PATCH_CLUSTER, ref.namespace, ref.cluster)
        api = await self.clients.member(cluster)
        return _Holder(api, calls.GET_CONFIGMAP, calls.PATCH_CONFIGMAP, KUBE_SYSTEM, CILIUM_CONFIG)

    async def _records(self, holder: _Holder) -> tuple[KubeObject, dict[str, _OperationRecord]]:
        obj = await holder.api.get(holder.get, holder.name, namespace=holder.namespace)
        if obj is None:
            raise NotFoundError(
                f"{holder.get.resource} {holder.namespace}/{holder.name} does not exist"
            )
        return obj, _parse_records(obj, holder.name)

    async def _save(
        self,
        holder: _Holder,
        read: KubeObject,
        records: Mapping[str, _OperationRecord],
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Write ``records`` onto the version of the holder that was ``read`` (409 if it moved)."""
        body = _records_body(records)
        body.update(extra or {})
        await holder.api.merge_patch(
            holder.patch,
            holder.name,
            body,
            namespace=holder.namespace,
            resource_version=calls.resource_version(read),
        )

    async def _begin(
        self,
        holder: _Holder,
        cluster: str,
        key: str,
        kind: OperationKind,
        target_version: str,
        *,
        spec: Mapping[str, Any] | None = None,
        mode: CiliumManagement | None = None,
        helm_chart_proxy: str | None = None,
    ) -> _OperationRecord:
        """The record for ``key``: the existing one (a retry), or a new one saved with ``spec``.

        Read, decide and write on one version of the holder: a concurrent start
        (another key, another worker) makes the write conflict, and the decision
        is taken again on what that start recorded.
        """
        for _ in range(calls.CONFLICT_ATTEMPTS):
            _, records = await self._records(holder)
            if key in records:
                check_same(records[key], cluster, kind, target_version)
                return records[key]
            for other in records.values():
                if other.kind is kind and other.state is None:
                    progress = await self._progress(cluster, holder, other)
                    if not progress.done:
                        raise OperationInProgressError(cluster, kind, other.key)
            read, records = await self._records(holder)
            if key in records or any(r.kind is kind and r.state is None for r in records.values()):
                continue  # changed while the running one was checked: decide again
            record = _OperationRecord(
                key=key,
                kind=kind,
                target_version=target_version,
                started_at=now(),
                mode=mode,
                helm_chart_proxy=helm_chart_proxy,
                extra={"cluster": cluster},
            )
            records[key] = record
            try:
                # One patch: the record and the change it describes land together or not at all.
                await self._save(holder, read, records, spec)
            except calls.KubernetesConflictError:
                log.info("kubernetes.operation_record_conflict", cluster=cluster, key=key)
                continue
            return record
        raise OperationConflictError(
            f"cluster {cluster!r}: the operation records on {holder.name} kept changing; "
            f"could not record {key!r}"
        )

    async def _progress(
        self, cluster: str, holder: _Holder, record: _OperationRecord
    ) -> OperationProgress:
        if record.state is not None:
            percent = 100 if record.state is OperationState.SUCCEEDED else 0
            components: list[RolloutStatus] = []
            if record.kind is OperationKind.CILIUM_UPGRADE:
                with contextlib.suppress(ClusterUnavailableError):
                    components = await self._components(cluster)
            return self._report(
                cluster, record, record.state, percent, "finished", record.message, components
            )
        if record.kind is OperationKind.CONTROL_PLANE_UPGRADE:
            progress = await self._control_plane_progress(cluster, record)
            timeout = self.access.control_plane_upgrade_timeout
        elif record.kind is OperationKind.CILIUM_UPGRADE:
            progress = await self._cilium_progress(cluster, record)
            timeout = self.access.cilium_upgrade_timeout
        else:
            progress = await self._enable_mesh_progress(cluster, record)
            timeout = self.access.cilium_upgrade_timeout
        if not progress.done and now() - record.started_at > timeout:
            what = record.kind.value
            progress = progress.model_copy(
                update={
                    "state": OperationState.FAILED,
                    "message": f"{what} of {cluster!r} to {record.target_version} is stuck: not "
                    f"done after {int(timeout.total_seconds())}s (last seen: {progress.phase}"
                    f"{'; ' + progress.message if progress.message else ''})",
                }
            )
        if progress.done:
            finished = record.model_copy(
                update={
                    "state": progress.state,
                    "finished_at": now(),
                    "message": progress.message,
                }
            )

            def finish(current: KubeObject) -> dict[str, Any] | None:
                records = _parse_records(current, holder.name)
                known = records.get(record.key)
                if known is not None and known.state is not None:
                    return None  # another worker recorded the outcome first
                records[record.key] = finished
                return _records_body(records)

            await calls.read_modify_write(
                holder.api,
                holder.get,
                holder.patch,
                holder.name,
                finish,
                namespace=holder.namespace,
            )
            log.info(
                "kubernetes.operation_finished",
                cluster=cluster,
                key=record.key,
                kind=record.kind.value,
                state=progress.state.value,
                reason=progress.message,
            )
            progress = progress.model_copy(update={"finished_at": finished.finished_at})
        return progress

    def _report(
        self,
        cluster: str,
        record: _OperationRecord,
        state: OperationState,
        percent: int,
        phase: str,
        message: str | None = None,
        components: Sequence[RolloutStatus] = (),
    ) -> OperationProgress:
        return OperationProgress(
            key=record.key,
            cluster=cluster,
            kind=record.kind,
            state=state,
            target_version=record.target_version,
            percent=max(0, min(100, percent)),
            phase=phase,
            message=message,
            started_at=record.started_at,
            finished_at=record.finished_at,
            components=list(components),
        )

    async def _cluster_object(self, cluster: str, target: MemberTarget) -> KubeObject:
        assert target.cluster_api is not None
        ref = target.cluster_api
        api = await self.clients.management(ref.management_context)
        obj = await api.get(calls.GET_CLUSTER, ref.cluster, namespace=ref.namespace)
        if obj is None:
            raise NotFoundError(f"cluster {cluster!r}: Cluster {_ref(target)} does not exist")
        return obj

    async def _control_plane_progress(
        self, cluster: str, record: _OperationRecord
    ) -> OperationProgress:
        target = await self.clients.target(cluster)
        assert target.cluster_api is not None
        assert record.target_version is not None
        obj = await self._cluster_object(cluster, target)
        ref = (obj.get("spec") or {}).get("controlPlaneRef") or {}
        if ref.get("kind") != "KubeadmControlPlane":
            raise ControlPlaneUpgradeNotPossibleError(
                f"cluster {cluster!r}: control plane kind {ref.get('kind')!r} is not supported "
                "(meshfleet follows KubeadmControlPlane)"
            )
        management = await self.clients.management(target.cluster_api.management_context)
        plane = await management.get(
            calls.GET_KUBEADM_CONTROL_PLANE,
            str(ref.get("name")),
            namespace=str(ref.get("namespace") or target.cluster_api.namespace),
        )
        if plane is None:
            raise NotFoundError(f"cluster {cluster!r}: its KubeadmControlPlane does not exist")
        want = Version.parse(record.target_version)
        status = plane.get("status") or {}
        desired = int((plane.get("spec") or {}).get("replicas") or status.get("replicas") or 1)
        updated = int(status.get("updatedReplicas") or 0)
        ready = int(status.get("readyReplicas") or 0)
        seen = str(status.get("version") or "")
        at_target = bool(seen) and Version.parse(seen) == want
        phase = (
            f"control plane at {seen.lstrip('v') or 'unknown'}; {updated}/{desired} machines "
            f"updated, {ready}/{desired} ready"
        )
        failure = _failure(obj) or _failure(plane)
        if failure:
            return self._report(cluster, record, OperationState.FAILED, 0, phase, failure)
        control_plane_ready = condition(obj, "ControlPlaneReady").get("status")
        if at_target and updated >= desired and ready >= desired and control_plane_ready != "False":
            return self._report(cluster, record, OperationState.SUCCEEDED, 100, phase)
        percent = int(99 * min(updated, ready) / desired) if desired else 0
        hint = _condition_hint(obj)
        return self._report(cluster, record, OperationState.RUNNING, percent, phase, hint)

    async def _components(self, cluster: str) -> list[RolloutStatus]:
        api = await self.clients.member(cluster)
        agent, operator, apiserver = await asyncio.gather(
            api.get(calls.GET_DAEMONSET, CILIUM_AGENT, namespace=KUBE_SYSTEM),
            api.get(calls.GET_DEPLOYMENT, CILIUM_OPERATOR, namespace=KUBE_SYSTEM),
            api.get(calls.GET_DEPLOYMENT, CLUSTERMESH_APISERVER, namespace=KUBE_SYSTEM),
        )
        found = [daemonset_rollout(agent, AGENT_CONTAINER)] if agent else []
        if operator:
            found.append(deployment_rollout(operator, CILIUM_OPERATOR))
        if apiserver:
            found.append(deployment_rollout(apiserver, "apiserver"))
        return found

    async def _cilium_progress(self, cluster: str, record: _OperationRecord) -> OperationProgress:
        assert record.target_version is not None
        want = Version.parse(record.target_version)
        try:
            components = await self._components(cluster)
        except ClusterUnavailableError as error:
            self.clients.forget(cluster)
            return self._report(cluster, record, OperationState.RUNNING, 0, error.reason)
        if not components:
            return self._report(
                cluster, record, OperationState.FAILED, 0, "no Cilium agent", "Cilium is gone"
            )
        arrived = [c for c in components if c.version and Version.parse(c.version) == want]
        done = [c for c in arrived if c.rolled_out]
        phase = ", ".join(
            f"{c.name} {c.version or '?'} {c.ready}/{c.desired} ready" for c in components
        )
        percent = int(99 * len(done) / len(components))
        if len(done) == len(components):
            return self._report(
                cluster, record, OperationState.SUCCEEDED, 100, phase, components=components
            )
        if record.mode is CiliumManagement.PROVIDER_MANAGED and all(
            c.rolled_out for c in components
        ):
            versions = sorted({c.version or "?" for c in components})
            return self._report(
                cluster,
                record,
                OperationState.FAILED,
                percent,
                phase,
                f"provider-managed Cilium on {cluster!r} runs {', '.join(versions)}, not the "
                f"bundled {want}; it arrives with the control plane upgrade (upgrade the control "
                "plane first, or check the provider's Cilium version for this release)",
                components,
            )
        return self._report(
            cluster, record, OperationState.RUNNING, percent, phase, components=components
        )

    async def _enable_mesh_progress(
        self, cluster: str, record: _OperationRecord
    ) -> OperationProgress:
        api = await self.clients.member(cluster)
        apiserver = await api.get(
            calls.GET_DEPLOYMENT, CLUSTERMESH_APISERVER, namespace=KUBE_SYSTEM
        )
        if apiserver is None:
            # The chart deploys it once the values are rendered; a stuck render times out.
            return self._report(
                cluster,
                record,
                OperationState.RUNNING,
                10,
                "clustermesh-apiserver not deployed yet",
            )
        rollout = deployment_rollout(apiserver, "apiserver")
        phase = f"clustermesh-apiserver {rollout.ready}/{rollout.desired} ready"
        if not rollout.rolled_out:
            return self._report(
                cluster, record, OperationState.RUNNING, 50, phase, components=[rollout]
            )
        service, nodes = await asyncio.gather(
            api.get(calls.GET_SERVICE, CLUSTERMESH_APISERVER, namespace=KUBE_SYSTEM),
            api.list(calls.LIST_NODES),
        )
        reachable = apiserver_endpoint(cluster, service, nodes)
        if isinstance(reachable, str):
            # Waiting for an address is progress; a Service peers can never reach is not.
            state = (
                OperationState.RUNNING if reachable.startswith("waiting") else OperationState.FAILED
            )
            return self._report(
                cluster,
                record,
                state,
                80,
                f"{phase}; its Service: {reachable}",
                reachable if state is OperationState.FAILED else None,
                components=[rollout],
            )
        return self._report(
            cluster, record, OperationState.SUCCEEDED, 100, phase, components=[rollout]
        )


# --- helpers ------------------------------------------------------------------------------


def full_version(cluster: str, text: str) -> Version:
    try:
        version = Version.parse(text)
    except ValueError as error:
        raise MeshfleetError(f"cluster {cluster!r}: {error}") from None
    if version.patch is None:
        raise MeshfleetError(
            f"cluster {cluster!r}: target version {text!r} needs a patch number (MAJOR.MINOR.PATCH)"
        )
    return version


def check_same(
    record: _OperationRecord, cluster: str, kind: OperationKind, target_version: str
) -> None:
    if (
        record.kind is not kind
        or record.target_version != target_version
        or record.extra.get("cluster", cluster) != cluster
    ):
        raise OperationConflictError(
            f"idempotency key {record.key!r} was used for a {record.kind.value} to "
            f"{record.target_version} on {cluster!r}"
        )


def _ref(target: MemberTarget) -> str:
    ref = target.cluster_api
    return f"{ref.namespace}/{ref.cluster}" if ref else target.name


def _failure(obj: KubeObject) -> str | None:
    """A Cluster API failure: ``status.failureMessage`` or a condition with severity Error."""
    status = obj.get("status") or {}
    if status.get("failureMessage") or status.get("failureReason"):
        return (
            f"{obj.get('kind', 'object')} failed: {status.get('failureReason') or ''} "
            + str(status.get("failureMessage") or "").strip()
        )
    for item in status.get("conditions") or []:
        if item.get("status") == "False" and item.get("severity") == "Error":
            return (
                f"{obj.get('kind', 'object')} condition {item.get('type')} is False: "
                f"{item.get('reason') or ''} {item.get('message') or ''}".strip()
            )
    return None


def _condition_hint(obj: KubeObject) -> str | None:
    """The first False condition of a Cluster, as a short progress note."""
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("status") == "False":
            text = f"{item.get('type')}: {item.get('reason') or ''} {item.get('message') or ''}"
            return text.strip()
    return None


def _parse_records(obj: KubeObject, holder: str) -> dict[str, _OperationRecord]:
    """The operation records in the holder's annotation (unreadable: none, with a warning)."""
    text = meta(obj, "annotations").get(ANNOTATION_OPERATIONS)
    records: dict[str, _OperationRecord] = {}
    if text:
        try:
            for key, value in json.loads(text).items():
                records[key] = _OperationRecord.model_validate(value)
        except (ValueError, AttributeError, ValidationError):
            log.warning("kubernetes.operation_records_unreadable", holder=holder)
    return records


def _records_body(records: Mapping[str, _OperationRecord]) -> dict[str, Any]:
    """The merge patch that stores ``records`` (the newest ones) in the holder's annotation."""
    newest = sorted(records.values(), key=lambda r: r.started_at)[-_MAX_RECORDS:]
    text = json.dumps(
        {r.key: r.model_dump(mode="json", by_alias=True, exclude_none=True) for r in newest},
        sort_keys=True,
        separators=(",", ":"),
    )
    return {"metadata": {"annotations": {ANNOTATION_OPERATIONS: text}}}
