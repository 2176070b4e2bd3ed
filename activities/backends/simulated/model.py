"""The simulated world's persisted model: the document ``store`` saves, and the audit log's.

``World`` holds everything the simulation knows and is stored whole as one JSON
document (camelCase, as every meshfleet model); its parts are the clusters'
state, operations, faults, timed conditions, scheduled transitions
(``event_queue``), the mesh's caches and the continuity violations. Nothing here
computes: the rules live in ``timeline``, ``faults``, ``operations`` and ``world``.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from typing import Any

from pydantic import Field, PrivateAttr, field_serializer

from activities.backends.simulated.event_queue import Scheduled, in_order
from engine.domain.backend import OperationKind, OperationState
from engine.domain.fleet import Fault, SimulatedCluster, SimulatedFleet
from engine.domain.model import DomainModel


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
        """Whether the condition is in force at ``t``."""
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
    """What the first call with an idempotency key did (its kind, cluster and result)."""

    kind: str
    cluster: str
    result: dict[str, Any] | None = None


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
    #: Transitions to come: a heap on (at, seq) in memory (``event_queue``), stored sorted
    #: (as it always was; a sorted list is a heap too, so any stored world loads).
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
    #: In memory only: ``(k, t)``, every one of the first ``k`` conditions had ended by
    #: simulated time ``t`` (a condition's end only ever moves earlier), so an instant at
    #: or after ``t`` need not look at them (``ended_before``).
    _ended: tuple[int, float] = PrivateAttr(default=(0, -math.inf))

    def ended_before(self, t: float) -> int:
        """How many of the first conditions had all ended by ``t`` (0 before the last ``t``
        asked: the index only moves forward in time)."""
        count, as_of = self._ended
        if t < as_of:
            return 0
        conditions = self.conditions
        while count < len(conditions):
            end = conditions[count].end
            if end is None or end > t:
                break
            count += 1
        self._ended = (count, t)
        return count

    @property
    def time_scale(self) -> float:
        """Real seconds per simulated second (0: every transition at once)."""
        return self.fleet.spec.time_scale

    @field_serializer("events")
    def _events_in_order(self, events: list[Scheduled]) -> list[Scheduled]:
        return in_order(events)


def service_key(namespace: str, name: str) -> str:
    """A global service's key: ``namespace/name``."""
    return f"{namespace}/{name}"
