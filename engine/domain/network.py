"""A cross-cluster network: its workflow's contract, its state, and the rules that need no I/O.

One entity workflow per network (id ``network/<name>``) owns the membership.
Everything that talks to it is declared here: the workflow, update, query and
activity names (workflows call activities by these names and never import
them), the input and result models of every boundary, and the pure rules the
update validators apply before anything reaches history.

Pure data and rules: no I/O, no clock, no Temporal.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Sequence
from typing import TypeAlias

from pydantic import Field

from engine.domain import search_attributes
from engine.domain.backend import (
    ANNOTATION_NAMESPACE_GLOBAL,
    ANNOTATION_SERVICE_GLOBAL,
    AnnotationChange,
    FailedRule,
    GlobalService,
    JoinRule,
    MemberDescription,
    NotReadyLink,
    join_prerequisite_failures,
)
from engine.domain.durations import Duration
from engine.domain.errors import MeshfleetError
from engine.domain.model import DomainModel
from engine.domain.names import (
    MAX_CLUSTER_ID,
    MAX_NETWORK_MEMBERS,
    MIN_CLUSTER_ID,
    cluster_name_problem,
    resource_name_problem,
)

__all__ = [
    "ACTIVITY_CHECK_CANDIDATES",
    "ACTIVITY_CONNECT_PEERS",
    "ACTIVITY_DISABLE_MESH",
    "ACTIVITY_DISCONNECT_PEERS",
    "ACTIVITY_DRAIN_SERVICES",
    "ACTIVITY_ENABLE_MESH",
    "ACTIVITY_LIST_SERVICES",
    "ACTIVITY_LOOK_AT_HOLDER",
    "ACTIVITY_RESTORE_SERVICES",
    "ACTIVITY_WAIT_MESH_READY",
    "ACTIVITY_WAIT_UNLISTED",
    "ACTIVITY_WATCH_HOLDER",
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
    "AcquireRequest",
    "CandidateCheck",
    "CandidateChecks",
    "CheckCandidatesInput",
    "ClearDrainedRequest",
    "DeleteRequest",
    "DeleteResult",
    "DisableMeshInput",
    "DrainServicesInput",
    "DrainedServices",
    "EnableMeshInput",
    "EnableMeshResult",
    "GlobalServices",
    "HolderEnd",
    "HolderExecution",
    "JoinRequest",
    "JoinResult",
    "LeftDrained",
    "ListServicesInput",
    "LogEntry",
    "LogSummary",
    "MemberId",
    "MemberOutcome",
    "MemberResult",
    "MembershipRule",
    "MeshReadiness",
    "NetworkDescription",
    "NetworkExistsError",
    "NetworkInput",
    "NetworkMember",
    "NetworkRequestError",
    "NetworkService",
    "NetworkSettings",
    "NetworkState",
    "NetworkStatus",
    "NetworkSummary",
    "OperationKind",
    "OperationRequest",
    "OperationResult",
    "OperatorReleaseRequest",
    "PeersInput",
    "PendingOperation",
    "ReleaseRequest",
    "RemoveRequest",
    "RemoveResult",
    "ReportLeftDrainedRequest",
    "RestoreServicesInput",
    "ServiceInCluster",
    "ServicesReport",
    "ServicesRequest",
    "WaitMeshReadyInput",
    "WaitUnlistedInput",
    "WatchHolderInput",
    "acquire_problem",
    "delete_problem",
    "evaluate_candidates",
    "join_problems",
    "lowest_free_cluster_id",
    "member_list_problems",
    "network_name_problem",
    "network_workflow_id",
    "operator_release_problem",
    "queue_problem",
    "remove_problems",
    "services_report",
]

# --- names: the workflow, its messages, its activities --------------------------------------

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

ACTIVITY_CHECK_CANDIDATES = "network.check_candidates"
ACTIVITY_ENABLE_MESH = "network.enable_mesh"
ACTIVITY_CONNECT_PEERS = "network.connect_peers"
ACTIVITY_WAIT_MESH_READY = "network.wait_mesh_ready"
ACTIVITY_DRAIN_SERVICES = "network.drain_services"
ACTIVITY_DISCONNECT_PEERS = "network.disconnect_peers"
ACTIVITY_WAIT_UNLISTED = "network.wait_unlisted"
ACTIVITY_DISABLE_MESH = "network.disable_mesh"
ACTIVITY_RESTORE_SERVICES = "network.restore_services"
ACTIVITY_LIST_SERVICES = "network.list_services"
ACTIVITY_WATCH_HOLDER = "network.watch_holder"
ACTIVITY_LOOK_AT_HOLDER = "network.look_at_holder"


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


class OperationKind(str, enum.Enum):
    """A membership change; they run one at a time, in the order they were accepted."""

    JOIN = "join"
    REMOVE = "remove"
    DELETE = "delete"


class MembershipRule(str, enum.Enum):
    """Every rule a member can be rejected for: the backend's join rules, plus our own."""

    KUBERNETES_VERSION = JoinRule.KUBERNETES_VERSION.value
    CILIUM_DATAPLANE = JoinRule.CILIUM_DATAPLANE.value
    FLAT_NETWORK = JoinRule.FLAT_NETWORK.value
    NO_SELF_MANAGED_MESH = JoinRule.NO_SELF_MANAGED_MESH.value
    CLUSTER_NAME = JoinRule.CLUSTER_NAME.value
    CLUSTER_ID = JoinRule.CLUSTER_ID.value
    POD_CIDRS = JoinRule.POD_CIDRS.value
    SINGLE_NETWORK = JoinRule.SINGLE_NETWORK.value
    API_AVAILABLE = JoinRule.API_AVAILABLE.value
    #: The cluster is not known to the backend.
    CLUSTER_KNOWN = "clusterKnown"
    #: The network would exceed 255 members.
    MEMBER_LIMIT = "memberLimit"
    #: Already a member (or not one, for a removal) by the time the operation ran.
    MEMBERSHIP = "membership"
    #: A delete without ``force`` found members.
    NETWORK_EMPTY = "networkEmpty"


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
    kind: OperationKind
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


class ReportLeftDrainedRequest(DomainModel):
    """A run says what its restore left drained on ``member`` (no services: restored since)."""

    run_id: str
    member: str
    services: list[str] = Field(default_factory=list)


class ClearDrainedRequest(DomainModel):
    """An operator says ``member`` is no longer drained (restored by hand, or removed)."""

    member: str = Field(min_length=1, max_length=200)
    #: Who clears it (``user@host`` by default), recorded in the network's log.
    identity: str = Field(min_length=1, max_length=200)
    #: Why, recorded in the network's log.
    reason: str = Field(min_length=1, max_length=1000)


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

    def queued(self, kind: OperationKind) -> list[str]:
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


# --- requests and results -----------------------------------------------------------------


class JoinRequest(DomainModel):
    """Join these clusters (in this order)."""

    members: list[str]


class RemoveRequest(DomainModel):
    """Remove these members (one at a time, in this order)."""

    members: list[str]


class DeleteRequest(DomainModel):
    """Delete the network: only an empty one, unless ``force`` removes every member first."""

    force: bool = False


class AcquireRequest(DomainModel):
    """An update run takes the network; membership changes wait until it releases it."""

    run_id: str
    #: The holder's workflow execution (its acquire activity reads them from its own
    #: info). With them the hold is a lease: it ends when that execution closes.
    holder_workflow_id: str | None = None
    holder_run_id: str | None = None

    def execution(self) -> HolderExecution | None:
        """The execution to watch, when the request named one."""
        if self.holder_workflow_id and self.holder_run_id:
            return HolderExecution(workflow_id=self.holder_workflow_id, run_id=self.holder_run_id)
        return None


class ReleaseRequest(DomainModel):
    """The update run gives the network back; queued membership changes then run."""

    run_id: str


class OperatorReleaseRequest(DomainModel):
    """An operator frees a network whose holder is gone (refused while the holder lives)."""

    #: Who asks (``user@host`` by default), recorded in the network's log.
    identity: str = Field(min_length=1, max_length=200)
    #: Why, recorded in the network's log.
    reason: str = Field(min_length=1, max_length=1000)


class WatchHolderInput(DomainModel):
    """Wait until the holder's execution chain closes, or ``period`` passes."""

    holder: HolderExecution
    period: Duration


class HolderEnd(DomainModel):
    """How a watch (or a one-off look) at the holder's execution ended."""

    #: The execution chain is closed (or gone): the hold has no holder left.
    ended: bool
    #: How it closed (completed, failed, terminated, canceled, timed out, not found).
    how: str | None = None


class ServicesRequest(DomainModel):
    """List the network's global services (nothing to say yet; a model for compatibility)."""


class MemberOutcome(str, enum.Enum):
    """What happened to one member of a request."""

    JOINED = "joined"
    REMOVED = "removed"
    REJECTED = "rejected"
    QUEUED = "queued"
    FAILED = "failed"


class MemberResult(DomainModel):
    """One member's outcome; ``rule`` names the broken rule when rejected."""

    cluster: str
    outcome: MemberOutcome
    rule: MembershipRule | None = None
    message: str | None = None
    cluster_id: int | None = None


class OperationResult(DomainModel):
    """The result of a membership update (join, remove or delete)."""

    network: str
    operation: str
    kind: OperationKind
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


class OperationRequest(DomainModel):
    """Ask for the result of an operation whose caller was handed over (``continued``)."""

    id: str


JoinResult: TypeAlias = OperationResult
RemoveResult: TypeAlias = OperationResult
DeleteResult: TypeAlias = OperationResult


# --- rules that need no I/O (update validators; the client checks them too) --------------


def member_list_problems(members: Sequence[str]) -> list[str]:
    """Why a list of cluster names cannot be a request: empty, a bad name, a duplicate."""
    problems: list[str] = []
    if not members:
        problems.append("name at least one cluster")
    seen: set[str] = set()
    for name in members:
        problem = cluster_name_problem(name)
        if problem:
            problems.append(f"cluster name {name!r} {problem}")
        if name in seen:
            problems.append(f"{name!r} appears more than once in the request")
        seen.add(name)
    return problems


def _deleting_problem(state: NetworkState) -> str | None:
    if state.deleted or state.deleting:
        return f"network {state.name!r} is being deleted"
    return None


def queue_problem(state: NetworkState) -> str | None:
    """Why no further membership operation can be queued now (None: it can)."""
    if len(state.pending) >= MAX_QUEUED_OPERATIONS:
        return (
            f"network {state.name!r} already has {len(state.pending)} queued operations "
            f"(at most {MAX_QUEUED_OPERATIONS}): wait until they have run"
        )
    return None


def join_problems(state: NetworkState, members: Sequence[str]) -> list[str]:
    """Why joining ``members`` must be rejected before it is accepted (empty: accept)."""
    problems = member_list_problems(members)
    deleting = _deleting_problem(state)
    if deleting:
        problems.append(deleting)
    queued = set(state.queued(OperationKind.JOIN))
    for name in dict.fromkeys(members):
        if state.member(name) is not None:
            problems.append(f"{name!r} is already a member of {state.name!r}")
        elif name in queued:
            problems.append(f"{name!r} is already queued to join {state.name!r}")
    newcomers = [m for m in dict.fromkeys(members) if state.member(m) is None and m not in queued]
    total = len(state.members) + len(queued) + len(newcomers)
    if total > MAX_NETWORK_MEMBERS:
        problems.append(
            f"a network has at most {MAX_NETWORK_MEMBERS} members: {state.name!r} has "
            f"{len(state.members)} (and {len(queued)} queued to join); "
            f"{len(newcomers)} more would make {total}"
        )
    return problems


def remove_problems(state: NetworkState, members: Sequence[str]) -> list[str]:
    """Why removing ``members`` must be rejected before it is accepted (empty: accept)."""
    problems = member_list_problems(members)
    deleting = _deleting_problem(state)
    if deleting:
        problems.append(deleting)
    joining = set(state.queued(OperationKind.JOIN))
    leaving = set(state.queued(OperationKind.REMOVE))
    for name in dict.fromkeys(members):
        if state.member(name) is None and name not in joining:
            problems.append(f"{name!r} is not a member of {state.name!r}")
        elif name in leaving:
            problems.append(f"{name!r} is already queued to leave {state.name!r}")
    return problems


def delete_problem(state: NetworkState, force: bool) -> str | None:
    """Why a delete must be rejected before it is accepted (None: accept)."""
    deleting = _deleting_problem(state)
    if deleting:
        return deleting
    joining = state.queued(OperationKind.JOIN)
    if not force and (state.members or joining):
        count = len(state.members) + len(joining)
        return (
            f"network {state.name!r} has {count} member(s) (joined or queued); "
            "remove them first or delete with force"
        )
    return None


def acquire_problem(state: NetworkState, run_id: str) -> str | None:
    """Why ``run_id`` cannot take the network now (None: it can, or already holds it)."""
    if not run_id:
        return "a run id is required"
    deleting = _deleting_problem(state)
    if deleting:
        return deleting
    if state.holder is not None and state.holder != run_id:
        return f"network {state.name!r} is held by update run {state.holder!r}"
    return None


def operator_release_problem(state: NetworkState) -> str | None:
    """Why an operator's release must be refused before I/O (None: look at the holder)."""
    if state.holder is None:
        return f"network {state.name!r} is not held by any update run"
    return None


def lowest_free_cluster_id(used: Iterable[int]) -> int | None:
    """The lowest cluster id in 1..255 not in ``used`` (None when all are taken)."""
    taken = set(used)
    return next((i for i in range(MIN_CLUSTER_ID, MAX_CLUSTER_ID + 1) if i not in taken), None)


# --- activity boundaries ------------------------------------------------------------------


class MemberId(DomainModel):
    """A member's name and the cluster id the network knows it by."""

    name: str
    cluster_id: int


class CheckCandidatesInput(DomainModel):
    """Check newcomers against the rules that need I/O, in order, against the members."""

    network: str
    candidates: list[str]
    members: list[MemberId]


class CandidateCheck(DomainModel):
    """One candidate's verdict: the rules it breaks, and the cluster id it would get."""

    cluster: str
    failed: list[FailedRule] = Field(default_factory=list)
    #: The id to join with (kept when valid and free, else the lowest free one).
    cluster_id: int | None = None
    cluster_id_assigned: bool = False
    #: Set when the backend does not know the cluster.
    unknown: str | None = None

    @property
    def ok(self) -> bool:
        """May join."""
        return not self.failed and self.unknown is None and self.cluster_id is not None


class CandidateChecks(DomainModel):
    """Every candidate's verdict, in request order."""

    checks: list[CandidateCheck]


def evaluate_candidates(
    network: str,
    candidates: Sequence[MemberDescription],
    members: Sequence[tuple[MemberDescription, int]],
) -> list[CandidateCheck]:
    """Check each candidate against the members and the candidates accepted before it.

    ``members`` pairs each member's description with the id the network knows
    it by. A candidate keeps its own cluster id when it is valid and free;
    otherwise it gets the lowest free id (so a missing or clashing id is not a
    reason to reject). Pod CIDRs and every other rule are the backend's shared
    rules (:func:`join_prerequisite_failures`).
    """
    peers = [d.model_copy(update={"cluster_id": cid}) for d, cid in members]
    checks: list[CandidateCheck] = []
    for candidate in candidates:
        used = {p.cluster_id for p in peers if p.cluster_id is not None}
        failed = [
            f
            for f in join_prerequisite_failures(candidate, network, peers)
            if f.rule is not JoinRule.CLUSTER_ID
        ]
        own = candidate.cluster_id
        cluster_id: int | None
        if own is not None and MIN_CLUSTER_ID <= own <= MAX_CLUSTER_ID and own not in used:
            cluster_id, assigned = own, False
        else:
            cluster_id, assigned = lowest_free_cluster_id(used), True
        if cluster_id is None:
            failed.append(
                FailedRule(rule=JoinRule.CLUSTER_ID, message="no free cluster id in 1..255")
            )
        check = CandidateCheck(
            cluster=candidate.name,
            failed=failed,
            cluster_id=cluster_id,
            cluster_id_assigned=assigned,
        )
        checks.append(check)
        if check.ok:
            peers.append(candidate.model_copy(update={"cluster_id": cluster_id}))
    return checks


class EnableMeshInput(DomainModel):
    """Deploy the mesh on a newcomer, recording the network, and wait until it is done."""

    cluster: str
    network: str
    idempotency_key: str
    timeout: Duration
    #: The id the network allocated (the cluster's own, or one assigned); None in
    #: histories recorded before it was passed (the backend then keeps the cluster's own).
    cluster_id: int | None = None


class EnableMeshResult(DomainModel):
    """Whether the mesh came up on the newcomer; ``rule`` when it turned out to break one."""

    cluster: str
    succeeded: bool
    rule: MembershipRule | None = None
    message: str | None = None


class PeersInput(DomainModel):
    """Connect (or disconnect) ``cluster`` to ``peers``, one direction."""

    cluster: str
    peers: list[str]
    idempotency_key: str


class WaitMeshReadyInput(DomainModel):
    """Wait until every member sees every other ready, or ``timeout`` passes."""

    members: list[str]
    timeout: Duration


class MeshReadiness(DomainModel):
    """How a wait for the mesh ended: ready, or the links still not ready."""

    ready: bool
    not_ready_links: list[NotReadyLink] = Field(default_factory=list)
    observed_at: dt.datetime | None = None


class DrainServicesInput(DomainModel):
    """Stop ``cluster`` exporting its global services; wait until ``peers`` stop routing to it."""

    cluster: str
    peers: list[str]
    idempotency_key: str
    timeout: Duration


class DrainedServices(DomainModel):
    """The annotation changes a drain made (restoring sets ``previous`` back)."""

    changes: list[AnnotationChange] = Field(default_factory=list)


class WaitUnlistedInput(DomainModel):
    """Wait until none of ``peers`` lists ``cluster`` as a peer any more."""

    cluster: str
    peers: list[str]
    timeout: Duration


class RestoreServicesInput(DomainModel):
    """Put back the annotations a drain changed."""

    changes: list[AnnotationChange]
    idempotency_key: str


class ListServicesInput(DomainModel):
    """List the global services of these members."""

    members: list[str]


class DisableMeshInput(DomainModel):
    """Remove the mesh components and the network record from a cluster."""

    cluster: str
    idempotency_key: str


class GlobalServices(DomainModel):
    """What the backend reports about the members' global services."""

    services: list[GlobalService] = Field(default_factory=list)


# --- global services report ---------------------------------------------------------------


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
