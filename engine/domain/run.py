"""Update runs: their status tree, their controls, and the contracts of their steps.

States and field names follow Azure Fleet's update runs (``reference/fleet-update-runs.md``):
a run has stages, a stage has groups, a group has members, and each of them has
one of the same eight states.
"""

from __future__ import annotations

import datetime as dt
import enum

from pydantic import Field

from engine.domain.member import Member
from engine.domain.mesh import NotReadyLink
from engine.domain.model import DomainModel
from engine.domain.plan import Plan, VersionPair
from engine.domain.roster import RosterRef
from engine.domain.runspec import RunSpec, UpgradeType
from engine.domain.services import AnnotationChange
from engine.domain.strategy import GateType, UpdateStrategy

UPDATE_RUN_WORKFLOW = "UpdateRun"
MEMBER_UPDATE_WORKFLOW = "MemberUpdate"

# Updates (controls) and queries of the run workflow.
APPROVE = "approve"
STOP = "stop"
RESUME = "resume"
SKIP = "skip"
RETRY = "retry"
STATUS = "status"

# Activities of a run, by name (workflows never import the activities package).
ACQUIRE_NETWORK = "acquire_network"
RELEASE_NETWORK = "release_network"
#: Tell the network which services a member's failed restore left drained.
REPORT_LEFT_DRAINED = "report_left_drained"
DESCRIBE_MEMBERS = "describe_members"
#: The run's plan, computed once by an activity: its result is recorded in the history,
#: so a replay never recomputes the plan with newer planner code.
COMPUTE_PLAN = "compute_plan"
CHECK_MESH_HEALTH = "check_mesh_health"
#: The Prometheus histogram of gate waits, by ``kind`` (a :class:`GateKind`): the health
#: gates are timed by the worker's activity interceptor, the Approval and ScheduledStart
#: gates by the run through the SDK's replay-safe workflow meter.
GATE_WAIT_METRIC = "meshfleet_gate_wait_seconds"
GATE_WAIT_DESCRIPTION = "How long a gate waited, by kind (health gates, approvals, schedules)"
SERVICE_ENDPOINTS = "service_endpoints"
PREFLIGHT = "preflight_member"
#: Before the ``drain-record-first`` patch: annotate and wait in one activity.
DRAIN = "drain_member"
#: Annotate ``shared: "false"`` and return the record at once (nothing waits).
DRAIN_ANNOTATE = "drain_member_annotate"
#: Wait until the peers no longer route to a drained member.
DRAIN_WAIT = "drain_member_wait"
UPGRADE_CONTROL_PLANE = "upgrade_control_plane"
UPGRADE_CILIUM = "upgrade_cilium"
VERIFY = "verify_member"
#: Before the ``drain-record-first`` patch: restore and wait in one activity.
RESTORE = "restore_member"
#: Put back exactly the annotations a drain changed (past services that vanished).
RESTORE_ANNOTATIONS = "restore_member_annotations"
#: Wait until the peers route to a restored member again.
RESTORE_WAIT = "restore_member_wait"


def run_workflow_id(network: str, run: str) -> str:
    """``updaterun/<network>/<run>``: readable in the Web UI."""
    return f"updaterun/{network}/{run}"


def member_workflow_id(network: str, run: str, cluster: str) -> str:
    """``updaterun/<network>/<run>/member/<cluster>``: one member's story on one page."""
    return f"{run_workflow_id(network, run)}/member/{cluster}"


class State(str, enum.Enum):
    """The state of a run, stage, group or member (Fleet's eight)."""

    NOT_STARTED = "NotStarted"
    RUNNING = "Running"
    PENDING = "Pending"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    SKIPPED = "Skipped"
    FAILED = "Failed"
    COMPLETED = "Completed"

    @property
    def finished(self) -> bool:
        """Nothing more happens to it unless a person acts (resume, retry)."""
        return self in (State.STOPPED, State.SKIPPED, State.FAILED, State.COMPLETED)

    @property
    def satisfied(self) -> bool:
        """Finished well (Completed or Skipped): a stage that depends on it may start."""
        return self in (State.SKIPPED, State.COMPLETED)


class GateKind(str, enum.Enum):
    """Gates a person configures, and the built-in health gates that cannot be switched off."""

    APPROVAL = "Approval"
    SCHEDULED_START = "ScheduledStart"
    MESH_HEALTH = "MeshHealth"
    ENDPOINTS_BASELINE = "EndpointsBaseline"

    @classmethod
    def of(cls, gate_type: GateType) -> GateKind:
        return cls(gate_type.value)


class GateState(str, enum.Enum):
    """A gate waits (Pending) until a person or the clock completes it, or its owner is skipped."""

    NOT_STARTED = "NotStarted"
    PENDING = "Pending"
    COMPLETED = "Completed"
    SKIPPED = "Skipped"


class GateStatus(DomainModel):
    """One gate. ``id`` is what ``approve`` takes: ``<stage>[/<group>]/<before|after>/<n>``."""

    id: str
    display_name: str
    kind: GateKind
    state: GateState = GateState.NOT_STARTED
    #: ScheduledStart: when it opens by itself.
    opens_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    completed_by: str | None = None
    comment: str | None = None
    message: str | None = None
    #: ScheduledStart gates only: ``{startDay, startTime, utcOffset}`` as declared.
    start_day: str | None = None
    start_time: str | None = None
    utc_offset: str | None = None


class MemberStep(str, enum.Enum):
    """The six steps of one member's update, in order (DESIGN.md)."""

    PREFLIGHT = "Preflight"
    DRAIN = "Drain"
    CONTROL_PLANE = "ControlPlane"
    CILIUM = "Cilium"
    VERIFY = "Verify"
    RESTORE = "Restore"


#: The member step each of the member workflow's activities belongs to. Drain and
#: restore annotate first and wait for the peers second: both activities are the step.
STEP_OF_ACTIVITY: dict[str, MemberStep] = {
    PREFLIGHT: MemberStep.PREFLIGHT,
    DRAIN: MemberStep.DRAIN,
    DRAIN_ANNOTATE: MemberStep.DRAIN,
    DRAIN_WAIT: MemberStep.DRAIN,
    UPGRADE_CONTROL_PLANE: MemberStep.CONTROL_PLANE,
    UPGRADE_CILIUM: MemberStep.CILIUM,
    VERIFY: MemberStep.VERIFY,
    RESTORE: MemberStep.RESTORE,
    RESTORE_ANNOTATIONS: MemberStep.RESTORE,
    RESTORE_WAIT: MemberStep.RESTORE,
}
#: The activities of a step that only wait for the peers (after annotating).
PEER_WAITS = frozenset({DRAIN_WAIT, RESTORE_WAIT})


class MemberStatus(DomainModel):
    name: str
    state: State = State.NOT_STARTED
    message: str | None = None
    start_time: dt.datetime | None = None
    completed_time: dt.datetime | None = None
    from_: VersionPair = Field(alias="from")
    to: VersionPair
    hops: list[VersionPair] = Field(default_factory=list)
    step: MemberStep | None = None
    #: How many times this member was started in this run (retries make it grow).
    attempts: int = 0
    #: Pending because of a closed window: when it opens next.
    pending_until: dt.datetime | None = None


class AfterStageWaitStatus(DomainModel):
    """The soak after a stage: health is watched during it."""

    state: State = State.NOT_STARTED
    seconds: int = 0
    until: dt.datetime | None = None
    checks: int = 0
    #: Time already soaked before a stop: a resumed soak serves only the rest.
    served_seconds: float = 0
    #: Why it was skipped without a person asking (nothing was upgraded in the stage).
    message: str | None = None


class GroupStatus(DomainModel):
    name: str
    state: State = State.NOT_STARTED
    max_concurrency: int
    max_allowed_failures: int
    failure_count: int = 0
    before_gates: list[GateStatus] = Field(default_factory=list)
    after_gates: list[GateStatus] = Field(default_factory=list)
    members: list[MemberStatus] = Field(default_factory=list)
    message: str | None = None


class StageStatus(DomainModel):
    name: str
    state: State = State.NOT_STARTED
    depends_on: list[str] = Field(default_factory=list)
    max_concurrency: int
    max_allowed_failures: int
    failure_count: int = 0
    start_time: dt.datetime | None = None
    completed_time: dt.datetime | None = None
    before_gates: list[GateStatus] = Field(default_factory=list)
    after_gates: list[GateStatus] = Field(default_factory=list)
    after_stage_wait: AfterStageWaitStatus | None = None
    groups: list[GroupStatus] = Field(default_factory=list)
    message: str | None = None


class ControlAction(str, enum.Enum):
    START = "start"
    APPROVE = "approve"
    STOP = "stop"
    RESUME = "resume"
    SKIP = "skip"
    RETRY = "retry"


class ControlRecord(DomainModel):
    """An accepted control: what, who, why, when."""

    action: ControlAction
    at: dt.datetime
    identity: str
    reason: str | None = None
    details: str | None = None


class RunStatus(DomainModel):
    """The whole run, as the ``status`` query returns it."""

    run_id: str
    name: str
    network: str
    state: State = State.NOT_STARTED
    upgrade_type: UpgradeType = UpgradeType.FULL
    target: VersionPair | None = None
    strategy_name: str | None = None
    plan_hash: str | None = None
    start_time: dt.datetime | None = None
    completed_time: dt.datetime | None = None
    error: str | None = None
    failure_count: int = 0
    current_stage: str | None = None
    stages: list[StageStatus] = Field(default_factory=list)
    controls: list[ControlRecord] = Field(default_factory=list)
    #: Clusters that joined the network after the plan was made: reported, never added.
    joined_since_plan: list[str] = Field(default_factory=list)
    #: Members whose restore could not complete, with the services (``namespace/name``)
    #: still ``shared: "false"``: the run says so loudly, and the network lists them too.
    left_drained: dict[str, list[str]] = Field(default_factory=dict)

    def members(self) -> list[tuple[StageStatus, GroupStatus, MemberStatus]]:
        """Every member with its stage and group."""
        return [(s, g, m) for s in self.stages for g in s.groups for m in g.members]

    def member(self, name: str) -> MemberStatus | None:
        return next((m for _, _, m in self.members() if m.name == name), None)

    def gates(self) -> list[GateStatus]:
        """Every configured gate, stage gates and group gates."""
        found: list[GateStatus] = []
        for stage in self.stages:
            found += stage.before_gates + stage.after_gates
            for group in stage.groups:
                found += group.before_gates + group.after_gates
        return found


# --- controls -----------------------------------------------------------------------------


class Control(DomainModel):
    """Common to every control: who asks and why (recorded in the status)."""

    identity: str = Field(min_length=1, max_length=200)
    reason: str | None = Field(default=None, max_length=1000)


class ApproveRequest(Control):
    gate: str = Field(min_length=1)
    comment: str | None = Field(default=None, max_length=1000)


class StopRequest(Control):
    pass


class ResumeRequest(Control):
    pass


class SkipTargetType(str, enum.Enum):
    MEMBER = "Member"
    GROUP = "Group"
    STAGE = "Stage"
    AFTER_STAGE_WAIT = "AfterStageWait"


class SkipTarget(DomainModel):
    type: SkipTargetType
    name: str = Field(min_length=1)


class SkipRequest(Control):
    targets: list[SkipTarget] = Field(min_length=1)


class RetryRequest(Control):
    #: Failed members to retry; empty means every failed member.
    members: list[str] = Field(default_factory=list)


# --- workflow inputs ----------------------------------------------------------------------


class RunTimings(DomainModel):
    """Timeouts and periods the worker's settings decide (never read inside a workflow)."""

    #: How long a finished run stays open for resume/retry before it closes.
    linger: dt.timedelta = dt.timedelta(days=7)
    control_plane_timeout: dt.timedelta = dt.timedelta(hours=2)
    cilium_timeout: dt.timedelta = dt.timedelta(minutes=45)
    drain_timeout: dt.timedelta = dt.timedelta(minutes=10)
    poll_interval: dt.timedelta = dt.timedelta(seconds=2)
    #: A worker silent this long is presumed dead and its activity is retried elsewhere.
    heartbeat_timeout: dt.timedelta = dt.timedelta(seconds=30)
    #: How long a member keeps retrying to put its drained annotations back before it
    #: reports itself left drained (its state and message name the services).
    restore_timeout: dt.timedelta = dt.timedelta(minutes=30)
    #: A run waiting (soak, window, gate) with nothing in flight continues as new once its
    #: history has this many events (or when the server suggests it): well under 4,096.
    max_history_events: int = Field(default=2000, ge=100)


class UpdateRunInput(DomainModel):
    """Everything a run needs, snapshotted when it is created.

    A single input model keeps the workflow's signature stable as fields are
    added (``continued`` carries the state across continue-as-new).
    """

    run_id: str
    spec: RunSpec
    #: The release catalog as the client resolved it (data, so replays never re-read files).
    catalog: dict[str, object]
    timings: RunTimings = Field(default_factory=RunTimings)
    continued: RunState | None = None


class MemberUpdateInput(DomainModel):
    """One member's update: which hops, and what the run knows that the member needs."""

    run_id: str
    network: str
    member: str
    #: How many times the run has started this member (part of every idempotency key).
    attempt: int
    #: The run instance (its first Temporal run id, stable across continue-as-new): two
    #: runs under the same name never share idempotency keys. Empty in older histories.
    run_instance: str = ""
    upgrade_type: UpgradeType
    hops: list[VersionPair]
    target: VersionPair
    #: The network's members, copied in by runs started before issue 19 (older histories).
    #: Since then empty: ``roster`` says where the steps read the list.
    network_members: list[str] = Field(default_factory=list)
    #: The run's member list by reference (read by the activities that look at peers).
    roster: RosterRef | None = None
    #: Members in flight elsewhere in the run: their backends count as gone for continuity.
    in_flight: list[str] = Field(default_factory=list)
    min_ready_endpoints: int = 1
    mesh_ready_timeout: dt.timedelta
    timings: RunTimings = Field(default_factory=RunTimings)
    #: Set by runs since ``run-member-record-first-by-input``: the member drains by
    #: recording first without asking ``workflow.patched("drain-record-first")``. Every
    #: patch call records a marker and upserts ``TemporalChangeVersion``: two events and
    #: a visibility write per member. False in older histories (they ask, as recorded).
    record_first: bool = False

    def for_step(self, *, reads_members: bool = True) -> MemberUpdateInput:
        """This input for a step after preflight: only the member lists the step reads.

        Every step's input is stored in the member's history, and both lists grow with
        the network: ``in_flight`` only preflight reads; ``network_members`` (or the
        ``roster`` naming them) only the steps that look at peers (not the upgrade hops,
        ``reads_members=False``).
        """
        update: dict[str, object] = {"in_flight": []}
        if not reads_members:
            update["network_members"] = []
            update["roster"] = None
        return self.model_copy(update=update)


class MemberOutcome(str, enum.Enum):
    COMPLETED = "Completed"
    SKIPPED = "Skipped"
    #: Preflight found the step unsafe *now* (continuity): try again after others finish.
    DEFERRED = "Deferred"
    FAILED = "Failed"


class MemberUpdateResult(DomainModel):
    outcome: MemberOutcome
    message: str | None = None
    step: MemberStep | None = None
    versions: VersionPair | None = None
    #: Services (``namespace/name``) the member's restore could not put back: the member
    #: is still drained for them (``shared: "false"``), and ``message`` says so.
    left_drained: list[str] = Field(default_factory=list)


# --- activity contracts -------------------------------------------------------------------


class NetworkLease(DomainModel):
    """Taking or releasing a network for a run."""

    network: str
    run_id: str


class LeftDrainedReport(DomainModel):
    """What a run tells its network: its restore left ``member`` drained for ``services``
    (no services: the member was drained and restored since, so it is drained no more)."""

    network: str
    run_id: str
    member: str
    services: list[str] = Field(default_factory=list)


def left_drained_line(left_drained: dict[str, list[str]]) -> str | None:
    """``LEFT DRAINED: a-1 (shop/checkout)``: the run's loud line, or None when nothing is."""
    if not left_drained:
        return None
    members = "; ".join(f"{m} ({', '.join(s)})" for m, s in sorted(left_drained.items()))
    return f'LEFT DRAINED (still service.cilium.io/shared: "false"): {members}'


class LeasedNetwork(DomainModel):
    network: str
    members: list[str]
    #: Members the network lists as left drained by a run (restoring one clears it).
    left_drained: list[str] = Field(default_factory=list)


class DescribeMembersRequest(DomainModel):
    members: list[str]


class MeshHealthRequest(DomainModel):
    members: list[str]
    #: Wait up to this long for the mesh to be healthy (0: look once).
    timeout: dt.timedelta = dt.timedelta(0)


class MeshHealthResult(DomainModel):
    healthy: bool
    not_ready: list[NotReadyLink] = Field(default_factory=list)


class ServiceEndpointsRequest(DomainModel):
    members: list[str]
    #: When set: wait until every service has at least these ready endpoints (key -> count).
    baseline: dict[str, int] | None = None
    timeout: dt.timedelta = dt.timedelta(0)


class ServiceEndpointsResult(DomainModel):
    """Ready endpoints of every global service, summed over the members (key -> count)."""

    ready: dict[str, int]
    below_baseline: list[str] = Field(default_factory=list)


class PreflightOutcome(str, enum.Enum):
    PROCEED = "Proceed"
    AT_TARGET = "AtTarget"
    DEFERRED = "Deferred"
    REFUSED = "Refused"


class PreflightResult(DomainModel):
    outcome: PreflightOutcome
    message: str | None = None
    current: VersionPair | None = None


class DrainRecord(DomainModel):
    """What a drain changed, exactly, so the restore can put it back."""

    member: str
    changes: list[AnnotationChange] = Field(default_factory=list)
    #: Ready endpoints of the member per service before the drain (key -> count).
    ready_before: dict[str, int] = Field(default_factory=dict)


class HopRequest(DomainModel):
    """One upgrade hop of one member (``member`` without its lists: a hop reads none)."""

    member: MemberUpdateInput
    hop: VersionPair
    hop_index: int


class VerifyRequest(DomainModel):
    member: MemberUpdateInput
    drain: DrainRecord


class DrainWaitRequest(DomainModel):
    """Wait until the peers stop routing to the services a drain annotated."""

    member: MemberUpdateInput
    drain: DrainRecord


class RestoreRequest(DomainModel):
    member: MemberUpdateInput
    drain: DrainRecord


class RestoreResult(DomainModel):
    """What a restore put back, and which drained services no longer exist (``ns/name``)."""

    restored: list[str] = Field(default_factory=list)
    vanished: list[str] = Field(default_factory=list)


# --- the run's own state, carried across continue-as-new ----------------------------------


class RunState(DomainModel):
    """Everything the run workflow knows; the only thing continue-as-new carries."""

    status: RunStatus
    plan: Plan | None = None
    members: list[Member] = Field(default_factory=list)
    network_members: list[str] = Field(default_factory=list)
    #: Members the network listed as left drained when the run took it.
    network_left_drained: list[str] = Field(default_factory=list)
    baseline: dict[str, int] = Field(default_factory=dict)
    holding_network: bool = False
    stop_requested: bool = False
    #: The first Temporal run id of this run (what ``MemberUpdateInput.run_instance`` says).
    run_instance: str = ""
    #: How many member updates have ended (deferrals excepted) in this run.
    completions: int = 0
    #: Member -> ``completions`` when its deferred attempt was launched: it is tried again
    #: once anything completed since (what it waited for may be gone).
    deferred: dict[str, int] = Field(default_factory=dict)
    #: Stages whose built-in health gate before (after) their groups has passed: a run
    #: continued as new mid-stage does not check them again.
    checked_before: list[str] = Field(default_factory=list)
    checked_after: list[str] = Field(default_factory=list)
    #: Failed members a partial ``retry`` left failed: they no longer count against the
    #: budgets, so the members retried can run (a later retry of them counts them again).
    excused: list[str] = Field(default_factory=list)


UpdateRunInput.model_rebuild()


class PlanRequest(DomainModel):
    """What the run plans from: the members as read, the strategy, target and catalog."""

    members: list[Member]
    strategy: UpdateStrategy
    target: str
    #: The release catalog as the run carries it (data, never re-read from files).
    catalog: dict[str, object]
    #: The moment the plan is made for (the run's workflow time): windows are read at it.
    at: dt.datetime
    allow_multi_minor: bool = False


class PlanResult(DomainModel):
    """The plan, or every reason the rules refused it."""

    plan: Plan | None = None
    errors: list[str] = Field(default_factory=list)
