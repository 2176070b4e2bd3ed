"""A cross-cluster network: its workflow's name and messages, its state, its results.

One entity workflow per network (id ``network/<name>``) owns the membership.
Its requests and the rules they must pass are in
:mod:`engine.domain.network_requests`, its activities' contracts in
:mod:`engine.domain.network_activities`, the membership rules in
:mod:`engine.domain.membership`.

Pure data: no I/O, no clock, no Temporal.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from typing import TypeAlias

from pydantic import Field

from engine.domain import search_attributes
from engine.domain.durations import Duration
from engine.domain.errors import MeshfleetError
from engine.domain.membership import MembershipRule
from engine.domain.mesh import NotReadyLink
from engine.domain.model import DomainModel
from engine.domain.names import MAX_CLUSTER_ID, MIN_CLUSTER_ID, resource_name_problem

__all__ = [
    "MAX_KEPT_RESULTS",
    "MAX_LEFT_DRAINED",
    "MAX_QUEUED_OPERATIONS",
    "NETWORK_SEARCH_ATTRIBUTE",
    "NETWORK_WORKFLOW",
    "QUERY_DESCRIBE",
    "UPDATE_ACQUIRE",
    "UPDATE_CLEAR_DRAINED",
    "UPDATE_DELETE",
    "UPDATE_JOIN",
    "UPDATE_OPERATION",
    "UPDATE_OPERATOR_RELEASE",
    "UPDATE_RELEASE",
    "UPDATE_REMOVE",
    "UPDATE_REPORT_LEFT_DRAINED",
    "UPDATE_SERVICES",
    "DeleteResult",
    "HolderExecution",
    "JoinResult",
    "LeftDrained",
    "LogEntry",
    "LogSummary",
    "MemberResult",
    "MembershipChange",
    "MembershipOutcome",
    "NetworkDescription",
    "NetworkExistsError",
    "NetworkInput",
    "NetworkMember",
    "NetworkRequestError",
    "NetworkSettings",
    "NetworkState",
    "NetworkStatus",
    "NetworkSummary",
    "OperationResult",
    "PendingOperation",
    "RemoveResult",
    "network_name_problem",
    "network_workflow_id",
]

# --- names: the workflow and its messages ------------------------------------------------


NETWORK_WORKFLOW = "Network"


#: The Keyword search attribute every network (and update run) carries.
NETWORK_SEARCH_ATTRIBUTE = search_attributes.NETWORK.name


UPDATE_JOIN = "join"


UPDATE_REMOVE = "remove"


UPDATE_DELETE = "delete"


UPDATE_ACQUIRE = "acquire"


UPDATE_RELEASE = "release"


UPDATE_SERVICES = "services"


UPDATE_OPERATOR_RELEASE = "operatorRelease"


UPDATE_OPERATION = "operation"


#: A run reports a member its restore left drained (or, with no services, restored since).
UPDATE_REPORT_LEFT_DRAINED = "reportLeftDrained"


#: An operator clears a member from the left-drained list (recorded with who and why).
UPDATE_CLEAR_DRAINED = "clearDrained"


QUERY_DESCRIBE = "describe"


def network_workflow_id(name: str) -> str:
    """The network workflow's id: ``network/<name>``."""
    return f"network/{name}"


def network_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a network (Fleet's resource-name rule), or None."""
    problem = resource_name_problem(name)
    return f"network name {name!r} {problem}" if problem else None


class NetworkRequestError(MeshfleetError):
    """A membership request broke a rule that needs no I/O (rejected before it was accepted)."""

    exit_code = 2


class NetworkExistsError(MeshfleetError):
    """``create`` named a network that already exists."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"network {name!r} already exists")


# --- state --------------------------------------------------------------------------------


class NetworkStatus(str, enum.Enum):
    """The network's status, as Fleet's cluster-mesh profiles report it."""

    NOT_CONNECTED = "NotConnected"
    APPLYING = "Applying"
    CONNECTED = "Connected"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class MembershipChange(str, enum.Enum):
    """A membership change; they run one at a time, in the order they were accepted."""

    JOIN = "join"
    REMOVE = "remove"
    DELETE = "delete"


class NetworkMember(DomainModel):
    """A member as the network knows it."""

    name: str
    cluster_id: int = Field(ge=MIN_CLUSTER_ID, le=MAX_CLUSTER_ID)
    #: True when the network chose the id (the cluster had none, or it clashed).
    cluster_id_assigned: bool = False
    joined_at: dt.datetime
    #: The operation that joined it.
    operation: str


class PendingOperation(DomainModel):
    """A membership change accepted and waiting for its turn (or running)."""

    id: str
    kind: MembershipChange
    members: list[str] = Field(default_factory=list)
    force: bool = False
    requested_at: dt.datetime
    #: The update run that held the network when this was queued behind it.
    queued_behind: str | None = None


class LogEntry(DomainModel):
    """One line of the network's bounded operation log."""

    at: dt.datetime
    event: str
    message: str
    operation: str | None = None
    cluster: str | None = None


class LogSummary(DomainModel):
    """What the bounded log no longer lists: how many entries of each event, and when."""

    entries: int = 0
    #: Dropped entries per event name (``accepted``, ``finished``, ``leaseEnded``, ...).
    events: dict[str, int] = Field(default_factory=dict)
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def fold(self, dropped: Sequence[LogEntry]) -> None:
        """Count ``dropped`` (oldest first) into the summary."""
        for entry in dropped:
            self.entries += 1
            self.events[entry.event] = self.events.get(entry.event, 0) + 1
            self.since = self.since or entry.at
            self.until = entry.at


#: At most this many membership operations wait in a network's queue.
MAX_QUEUED_OPERATIONS = 100


#: At most this many results of handed-over operations wait for their callers.
MAX_KEPT_RESULTS = 50


#: At most this many members are listed as left drained (the oldest entries go first).
MAX_LEFT_DRAINED = 100


class NetworkSettings(DomainModel):
    """Tunables given to the workflow at start (read from the runtime settings, never inside)."""

    #: How long a join or removal waits for the whole mesh to report ready.
    mesh_ready_timeout: Duration = Field(default_factory=lambda: dt.timedelta(minutes=10))
    #: A worker that stops heartbeating for this long is presumed dead; its activity is retried.
    heartbeat_timeout: Duration = Field(default_factory=lambda: dt.timedelta(seconds=30))
    #: How many log entries the network keeps.
    log_limit: int = Field(default=100, ge=10)
    #: How often a Degraded network's mesh is read again while nothing else runs, so
    #: that a healed mesh makes it Connected again.
    degraded_recheck_interval: Duration = Field(
        default_factory=lambda: dt.timedelta(minutes=5), ge=dt.timedelta(seconds=1)
    )
    #: The longest one watch of a holder's execution lasts before it reports "still
    #: running" and a new watch starts (a bounded activity; a few events per period).
    holder_watch_period: Duration = Field(
        default_factory=lambda: dt.timedelta(hours=1), ge=dt.timedelta(seconds=1)
    )
    #: The network continues as new once its history has this many events (or when
    #: the server suggests it): well under the 4,096 a history should stay below,
    #: leaving room for the operation in flight.
    continue_as_new_after: int = Field(default=1500, ge=100, le=3000)


class HolderExecution(DomainModel):
    """The Temporal execution of the run holding the network (the lease's holder).

    The network watches it: when the execution chain closes, however it closes,
    the hold ends with it.
    """

    workflow_id: str
    #: The run of that workflow that took the network (continue-as-new is followed).
    run_id: str


class LeftDrained(DomainModel):
    """A member an update run's restore could not put back: still ``shared: "false"``."""

    member: str
    #: The services (``namespace/name``) the member is still drained for.
    services: list[str]
    #: The update run whose restore failed.
    run_id: str
    at: dt.datetime


class NetworkState(DomainModel):
    """Everything the network workflow knows, in one object (carried by continue-as-new)."""

    name: str
    #: The run id of the network's first run: keeps idempotency keys unique when a
    #: network is deleted and created again under the same name.
    uid: str
    created_at: dt.datetime
    status: NetworkStatus = NetworkStatus.NOT_CONNECTED
    #: Why the status is Failed (or Degraded), in words.
    status_message: str | None = None
    members: list[NetworkMember] = Field(default_factory=list)
    holder: str | None = None
    #: The holder's execution, when its acquire said (holds taken by earlier code: None).
    holder_execution: HolderExecution | None = None
    pending: list[PendingOperation] = Field(default_factory=list)
    current: PendingOperation | None = None
    not_ready_links: list[NotReadyLink] = Field(default_factory=list)
    deleting: bool = False
    deleted: bool = False
    next_operation: int = 1
    log: list[LogEntry] = Field(default_factory=list)
    #: The entries the bounded log dropped, summarised (None until it first drops one).
    log_summary: LogSummary | None = None
    #: Operations whose callers were answered "continued" (a continue-as-new came
    #: first); their results wait in ``kept_results`` until asked for.
    handed_over: list[str] = Field(default_factory=list)
    kept_results: list[OperationResult] = Field(default_factory=list)
    #: Members an update run left drained, until restored or cleared by an operator.
    left_drained: list[LeftDrained] = Field(default_factory=list)

    def member(self, name: str) -> NetworkMember | None:
        """The member called ``name``, if any."""
        return next((m for m in self.members if m.name == name), None)

    def member_names(self) -> list[str]:
        """Member names in joining order."""
        return [m.name for m in self.members]

    def queued(self, kind: MembershipChange) -> list[str]:
        """Members named by queued (and the running) operations of ``kind``."""
        ops = [*([self.current] if self.current else []), *self.pending]
        return [name for op in ops if op.kind is kind for name in op.members]


class NetworkInput(DomainModel):
    """The workflow's one input (one model, so fields can be added compatibly)."""

    name: str
    settings: NetworkSettings = Field(default_factory=NetworkSettings)
    #: The state carried over by continue-as-new (None for a new network).
    state: NetworkState | None = None


class NetworkDescription(DomainModel):
    """What ``describe`` (and acquire/release) return: the network as it is now."""

    name: str
    status: NetworkStatus
    status_message: str | None = None
    members: list[NetworkMember]
    holder: str | None = None
    holder_execution: HolderExecution | None = None
    pending: list[PendingOperation] = Field(default_factory=list)
    current: PendingOperation | None = None
    #: When Degraded: the links that were not ready when the last wait gave up.
    not_ready_links: list[NotReadyLink] = Field(default_factory=list)
    deleting: bool = False
    created_at: dt.datetime
    log: list[LogEntry] = Field(default_factory=list)
    #: Older log entries, summarised (the log keeps the most recent ones).
    log_summary: LogSummary | None = None
    #: Members an update run left drained (``shared: "false"``), with services and run.
    left_drained: list[LeftDrained] = Field(default_factory=list)

    @classmethod
    def of(cls, state: NetworkState) -> NetworkDescription:
        """The description of ``state``."""
        return cls(
            name=state.name,
            status=state.status,
            status_message=state.status_message,
            members=list(state.members),
            holder=state.holder,
            holder_execution=state.holder_execution,
            pending=list(state.pending),
            current=state.current,
            not_ready_links=list(state.not_ready_links),
            deleting=state.deleting,
            created_at=state.created_at,
            log=list(state.log),
            log_summary=state.log_summary,
            left_drained=list(state.left_drained),
        )


class NetworkSummary(DomainModel):
    """One line of ``list_networks``: status and counts (None when the network did not answer)."""

    name: str
    status: NetworkStatus | None = None
    members: int | None = None
    holder: str | None = None
    pending: int | None = None
    started_at: dt.datetime | None = None


# --- results ------------------------------------------------------------------------------


class MembershipOutcome(str, enum.Enum):
    """What happened to one member of a request."""

    JOINED = "joined"
    REMOVED = "removed"
    REJECTED = "rejected"
    QUEUED = "queued"
    FAILED = "failed"


class MemberResult(DomainModel):
    """One member's outcome; ``rule`` names the broken rule when rejected."""

    cluster: str
    outcome: MembershipOutcome
    rule: MembershipRule | None = None
    message: str | None = None
    cluster_id: int | None = None


class OperationResult(DomainModel):
    """The result of a membership update (join, remove or delete)."""

    network: str
    operation: str
    kind: MembershipChange
    #: True when an update run holds the network: the change waits and runs on release.
    queued: bool = False
    #: The run holding the network when queued.
    holder: str | None = None
    members: list[MemberResult] = Field(default_factory=list)
    status: NetworkStatus
    #: Whether the whole mesh reported ready before the timeout (None: not waited).
    mesh_ready: bool | None = None
    not_ready_links: list[NotReadyLink] = Field(default_factory=list)
    message: str | None = None
    #: For delete: the network is gone.
    deleted: bool = False
    #: The network continued as new before the operation ran: ask the ``operation``
    #: update for its result (the client does).
    continued: bool = False


JoinResult: TypeAlias = OperationResult


RemoveResult: TypeAlias = OperationResult


DeleteResult: TypeAlias = OperationResult
