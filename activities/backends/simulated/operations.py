"""Long-running operations in the simulated world: upgrades and joins, their timelines and
progress, and the idempotency keys that make retries safe.

An operation starts at once (spending the operation faults that apply to it), lays
out its disruptions (a control plane's API blip, a Cilium upgrade's agent
restarts) as timed conditions and its completion as a scheduled transition, and
reports its progress from where simulated time stands in that timeline.
"""

from __future__ import annotations

import math
from typing import Any

from activities.backends.simulated.faults import FaultSimulation
from activities.backends.simulated.model import (
    AuditEvent,
    ClusterState,
    ConditionKind,
    IdempotencyRecord,
    SimOperation,
)
from engine.domain.backend import (
    OperationConflictError,
    OperationInProgressError,
    OperationKind,
    OperationProgress,
    OperationState,
)
from engine.domain.fleet import FaultKind, FaultTrigger
from engine.domain.mesh import RolloutStatus
from engine.domain.versions import Version

#: How long the API server is unavailable during a control-plane upgrade (simulated s).
API_BLIP_SECONDS = 30.0
#: Where in an upgrade the disruptive moment falls (fraction of its duration).
API_BLIP_AT = 0.5
AGENT_RESTART_AT = 0.25


class OperationSimulation(FaultSimulation):
    """The timeline with faults and operations: starting, planning, completing, reading them."""

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
        """Record what the first call with ``key`` did (``remembered`` reads it)."""
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
