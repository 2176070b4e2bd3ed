"""Faults in the simulated world: declared or injected, fired by their trigger, cleared by hand.

- ``meshPartition``, ``endpointsLost`` (``service`` is ``namespace/name``, or
  every service) and ``apiUnavailable`` open a window (a ``Condition``) when
  their trigger happens, for ``duration`` or until cleared; ``times`` triggers
  at most.
- ``fail``, ``hang`` and ``slow`` act on an operation: with ``on:
  controlPlaneUpgrade | ciliumUpgrade | join`` on operations of that kind
  (``operations`` asks :meth:`FaultSimulation._operation_faults`); with ``on:
  afterUpgrade`` or ``atSimTime`` they arm at that moment and act on the next
  operation of any kind on the cluster.
- Clearing a fault closes its windows and resumes operations it hung.
"""

from __future__ import annotations

import abc
from typing import Any

from activities.backends.simulated.model import (
    AuditEvent,
    Condition,
    ConditionKind,
    FaultRecord,
    SimOperation,
)
from activities.backends.simulated.timeline import TimelineSimulation
from engine.domain.backend import OperationState
from engine.domain.errors import NotFoundError
from engine.domain.fleet import Fault, FaultKind, FaultTrigger

#: The conditions that disturb a cluster's mesh links.
_LINK_CONDITIONS = frozenset({ConditionKind.AGENT_RESTART, ConditionKind.MESH_PARTITION})
#: The faults that act on an operation (the others open a window).
_OPERATIONAL = frozenset({FaultKind.FAIL, FaultKind.HANG, FaultKind.SLOW})


class FaultSimulation(TimelineSimulation):
    """The timeline with faults: adding, firing, arming and clearing them."""

    @abc.abstractmethod
    def _plan(self, op: SimOperation, t: float) -> None:
        """Lay out an operation's timeline from ``t`` (``operations``; a cleared hang resumes)."""

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
        operational = fault.kind in _OPERATIONAL
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
            operational = record.fault.kind in _OPERATIONAL
            if operational and trigger is not FaultTrigger.AFTER_UPGRADE:
                continue  # applied by the operation itself
            self._fire(record, t, trigger=trigger.value)

    def _operation_faults(self, cluster: str, trigger: FaultTrigger) -> list[FaultRecord]:
        """Operation faults that apply to an operation starting now (and spend them)."""
        found: list[FaultRecord] = []
        for record in self.world.faults:
            if record.cluster != cluster or record.cleared or record.remaining <= 0:
                continue
            if record.fault.kind not in _OPERATIONAL:
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


def _fault_details(fault: Fault) -> dict[str, Any]:
    return fault.to_json_dict()
