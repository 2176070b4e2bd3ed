"""The update run: a stage DAG of groups of members, gated on the mesh's health.

At start the run takes its network, reads the members and computes the plan
with the same pure planner as ``meshfleet plan`` (its hash goes into the
status). Then every stage waits for the stages it depends on; its groups run
in parallel; each member is a child workflow started within the group's and
the stage's concurrency, in the order the plan gives, when its maintenance
window is open and the version-skew rule allows it. Failure budgets decide
whether a failure fails the group, the stage and the run; members in flight
always finish. A finished run stays open for ``resume`` and ``retry`` until
``timings.linger`` passes, holding the network only while it works.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Iterator
from datetime import timedelta
from typing import NoReturn, TypeVar

from temporalio import workflow
from temporalio.common import (
    RetryPolicy,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
)
from temporalio.exceptions import ActivityError, ChildWorkflowError, FailureError
from temporalio.workflow import ParentClosePolicy

from engine.domain import run as contract
from engine.domain import search_attributes
from engine.domain.errors import InvalidInputError
from engine.domain.member import Member
from engine.domain.plan import Plan, PlannedMemberState, VersionPair
from engine.domain.roster import QUERY_ROSTER, RunRoster
from engine.domain.run import (
    AfterStageWaitStatus,
    ApproveRequest,
    ControlAction,
    ControlRecord,
    GateKind,
    GateState,
    GateStatus,
    GroupStatus,
    MemberOutcome,
    MemberStatus,
    MemberUpdateInput,
    MemberUpdateResult,
    ResumeRequest,
    RetryRequest,
    RunState,
    RunStatus,
    SkipRequest,
    StageStatus,
    State,
    StopRequest,
    UpdateRunInput,
)
from engine.domain.runspec import UpgradeType
from engine.domain.strategy import (
    Gate,
    GateType,
    GroupSpec,
    HealthSpec,
    StageSpec,
    StrategyMetadata,
    StrategySpec,
    UpdateStrategy,
)
from engine.domain.versions import Version
from engine.domain.windows import DayOfWeek, MaintenanceWindow
from strategies import (
    is_open,
    next_scheduled_start,
    parse_catalog,
    plan,
)
from strategies import run_machine as machine
from strategies.details import details_markdown
from strategies.progress import MemberVersions
from strategies.run_machine import budget_exceeded
from workflows.failures import failure_reason
from workflows.member_roster import member_roster

T = TypeVar("T")

NETWORK_KEY = search_attributes.NETWORK
STATE_KEY = search_attributes.RUN_STATE
STAGE_KEY = search_attributes.STAGE
TARGET_KEY = search_attributes.TARGET_VERSION
# h-ops: each member workflow names its network and cluster (MeshfleetMember), from this patch on.
MEMBER_KEY = search_attributes.MEMBER
MEMBER_SEARCH_ATTRIBUTE_PATCH = "member-search-attribute"

#: Run-level activities are short reads; retry transient failures a few times.
RUN_ACTIVITY_RETRY = RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(seconds=10))
#: Releasing after a failed acquire is best effort: the network may not exist at all.
BEST_EFFORT_RETRY = RetryPolicy(maximum_attempts=3, maximum_interval=timedelta(seconds=5))
QUICK = timedelta(minutes=2)
MARGIN = timedelta(minutes=1)

#: Patch: an activity error in preparation, a gate or a soak fails the stage or the run
#: (which stays open) instead of failing the workflow.
PATCH_SURVIVE_ACTIVITY_ERRORS = "run-survives-activity-errors"
#: Patch: a run cancelled (or failed by an error nothing absorbed) releases its network.
PATCH_RELEASE_ON_ANY_END = "run-release-on-any-end"
#: Patch: a failure no budget absorbs halts the whole run at once (not just its group).
PATCH_BUDGET_HALTS_RUN = "run-budget-halts-run"
#: Patch: a member whose restore could not complete is reported to the network.
PATCH_REPORT_LEFT_DRAINED = "report-left-drained"
#: Patch: a run on a network without members fails at once (it used to "run" 0/0).
PATCH_REFUSE_EMPTY_NETWORK = "run-refuse-empty-network"
#: Patch: skipping a stage or group skips its waiting gates (a later approve is refused).
PATCH_SKIP_RELEASES_GATES = "run-skip-releases-gates"
#: Patch: a partial retry excuses the failures it leaves, so its members can run.
PATCH_RETRY_EXCUSES_OTHERS = "run-retry-excuses-others"
#: Patch: resume and retry clear a member's deferral (a give-up can be retried).
PATCH_REOPEN_CLEARS_DEFERRAL = "run-reopen-clears-deferral"
#: Patch: the scheduler orders members with the planner's function.
PATCH_SHARED_MEMBER_ORDER = "run-shared-member-order"
#: Patch: dependents of a skipped stage wait for its members still in flight.
PATCH_DEPENDENTS_WAIT_IN_FLIGHT = "run-dependents-wait-in-flight"
#: Patch: a resume while Stopping carries on instead of ending Failed.
PATCH_RESUME_WHILE_STOPPING = "run-resume-while-stopping"
#: Patch: resume and retry read the network again (removed members are skipped).
PATCH_REREAD_ON_REOPEN = "run-reread-on-reopen"
#: Patch: no soak after a stage in which nothing was upgraded (recorded as Skipped).
PATCH_SOAK_ONLY_AFTER_UPGRADES = "run-soak-only-after-upgrades"
#: Patch: a stage skipped while a check ran stays Skipped when the check then fails.
PATCH_SKIPPED_STAGE_STAYS_SKIPPED = "run-skipped-stage-stays-skipped"
#: Patch: a soak resumed after a stop serves only what was left of it.
PATCH_SOAK_KEEPS_SERVED = "run-soak-keeps-served"
#: Patch: the run continues as new during long waits, not only while lingering.
PATCH_CONTINUE_AS_NEW_WHILE_WAITING = "run-continue-as-new-while-waiting"
#: Patch: one timer per window opening, not one per change of the run while waiting.
PATCH_ONE_TIMER_PER_OPENING = "run-one-timer-per-opening"
#: Patch: a failed acquire is followed by a release (the network may have granted it).
PATCH_RELEASE_AFTER_FAILED_ACQUIRE = "run-release-after-failed-acquire"
#: Patch: the plan is computed by an activity and recorded, never recomputed on replay.
PATCH_PLAN_RECORDED = "run-plan-recorded"


def _gates(gates: list[Gate], prefix: str) -> list[GateStatus]:
    found = []
    for index, gate in enumerate(gates):
        gate_id = f"{prefix}/{index}"
        found.append(
            GateStatus(
                id=gate_id,
                display_name=gate.display_name or gate_id,
                kind=GateKind.of(gate.type),
                start_day=gate.start_day.value if gate.start_day else None,
                start_time=gate.start_time,
                utc_offset=gate.utc_offset,
            )
        )
    return found


def status_from_plan(status: RunStatus, run_plan: Plan) -> list[StageStatus]:
    """The status tree of a fresh run: every stage, group, member and gate NotStarted."""
    stages = []
    for stage in run_plan.stages:
        groups = []
        for group in stage.groups:
            members = [
                MemberStatus(
                    name=m.name,
                    state=State.SKIPPED
                    if m.state is PlannedMemberState.SKIPPED
                    else State.NOT_STARTED,
                    message="already at the target"
                    if m.state is PlannedMemberState.SKIPPED
                    else None,
                    from_=m.from_,
                    to=m.to,
                    hops=m.hops,
                )
                for m in group.members
            ]
            groups.append(
                GroupStatus(
                    name=group.name,
                    max_concurrency=group.max_concurrency,
                    max_allowed_failures=group.max_allowed_failures,
                    before_gates=_gates(group.before_gates, f"{stage.name}/{group.name}/before"),
                    after_gates=_gates(group.after_gates, f"{stage.name}/{group.name}/after"),
                    members=members,
                )
            )
        stages.append(
            StageStatus(
                name=stage.name,
                depends_on=stage.depends_on,
                max_concurrency=stage.max_concurrency,
                max_allowed_failures=stage.max_allowed_failures,
                before_gates=_gates(stage.before_gates, f"{stage.name}/before"),
                after_gates=_gates(stage.after_gates, f"{stage.name}/after"),
                after_stage_wait=(
                    AfterStageWaitStatus(seconds=stage.after_stage_wait_seconds)
                    if stage.after_stage_wait_seconds
                    else None
                ),
                groups=groups,
            )
        )
    return stages


def one_by_one_strategy(members: list[Member]) -> UpdateStrategy:
    """Fleet's behaviour with no strategy: every member, one at a time."""
    return UpdateStrategy(
        metadata=StrategyMetadata(name="one-by-one"),
        spec=StrategySpec(
            stages=[
                StageSpec(
                    name="all",
                    groups=[GroupSpec(name="all", members=[m.name for m in members])],
                )
            ]
        ),
    )


@workflow.defn(name=contract.UPDATE_RUN_WORKFLOW)
class UpdateRunWorkflow:
    """One update run of one network (id ``updaterun/<network>/<run>``)."""

    @workflow.init
    def __init__(self, request: UpdateRunInput) -> None:
        self._input = request
        spec = request.spec
        self._state: RunState = request.continued or RunState(
            status=RunStatus(
                run_id=request.run_id,
                name=spec.name or request.run_id,
                network=spec.network,
                upgrade_type=spec.upgrade_type,
                strategy_name=spec.strategy.metadata.name if spec.strategy else spec.strategy_ref,
            )
        )
        #: Member name -> (stage, group) for members whose child workflow runs now.
        self._in_flight: dict[str, tuple[str, str]] = {}
        #: Member name -> the completion count at its latest launch.
        self._launched_at: dict[str, int] = {}
        #: Member name -> the members already in flight when it was launched.
        self._in_flight_before: dict[str, list[str]] = {}
        self._changes = 0
        self._failed_reason: str | None = None
        #: How many resumes and retries this execution has seen.
        self._reopens = 0
        #: Activities of the run itself in flight (continue-as-new waits for none).
        self._busy = 0
        #: Whether this run continues as new during long waits (decided once, replay-safe).
        self._can_while_waiting = False
        #: Window openings with a timer armed (one each), and whether this run arms them so.
        self._alarms: dict[dt.datetime, asyncio.Task[None]] = {}
        self._alarms_on: bool | None = None
        #: Whether the scheduler uses the planner's order (decided once, replay-safe).
        self._shared_order: bool | None = None
        #: How the built-in health gates are tuned (the strategy's, else the defaults).
        self._health = spec.strategy.spec.health if spec.strategy else HealthSpec()
        #: The search attributes last upserted (upsert only on change).
        self._published: tuple[tuple[str, str], ...] = ()
        #: Bumped by every publish; the Web UI's details are rendered once per batch of them.
        self._status_edits = 0
        self._rendered_edits = -1
        self._details: asyncio.Task[None] | None = None

    # --- queries and controls -------------------------------------------------------------

    @workflow.query(name=contract.STATUS)
    def status(self) -> RunStatus:
        """The whole run: stages, groups, members, gates and the controls accepted."""
        return self._state.status

    @workflow.query(name=QUERY_ROSTER)
    def roster(self) -> RunRoster:
        """The network's members as this run took them (what its members' steps read)."""
        return RunRoster(run_instance=self._state.run_instance, members=self._state.network_members)

    @workflow.update(name=contract.APPROVE)
    def approve(self, request: ApproveRequest) -> RunStatus:
        """Open a waiting gate (by id, or by its display name when unique)."""
        gate = machine.approve(self._state.status, request, workflow.now())
        self._record(ControlAction.APPROVE, request, f"gate {gate.id}")
        return self._state.status

    @approve.validator
    def _validate_approve(self, request: ApproveRequest) -> None:
        machine.validate_approve(self._state.status, request.gate)

    @workflow.update(name=contract.STOP)
    def stop(self, request: StopRequest) -> RunStatus:
        """Start nothing new; members in flight finish; the run ends Stopped."""
        self._state.stop_requested = True
        machine.stop(self._state.status)
        self._record(ControlAction.STOP, request)
        return self._state.status

    @stop.validator
    def _validate_stop(self, request: StopRequest) -> None:
        machine.validate_stop(self._state.status, request.reason)

    @workflow.update(name=contract.RESUME)
    def resume(self, request: ResumeRequest) -> RunStatus:
        """Continue a Stopped or Failed run; every failed member is tried again."""
        self._reopen(failed_members=None)
        self._record(ControlAction.RESUME, request)
        return self._state.status

    @resume.validator
    def _validate_resume(self, request: ResumeRequest) -> None:
        machine.validate_resume(self._state.status)

    @workflow.update(name=contract.SKIP)
    def skip(self, request: SkipRequest) -> RunStatus:
        """Skip members, groups, stages or after-stage waits."""
        release_gates = workflow.patched(PATCH_SKIP_RELEASES_GATES)
        machine.skip(
            self._state.status, request.targets, workflow.now(), release_gates=release_gates
        )
        names = ", ".join(f"{t.type.value} {t.name}" for t in request.targets)
        self._record(ControlAction.SKIP, request, names)
        return self._state.status

    @skip.validator
    def _validate_skip(self, request: SkipRequest) -> None:
        machine.validate_skip(self._state.status, request.targets)

    @workflow.update(name=contract.RETRY)
    def retry(self, request: RetryRequest) -> RunStatus:
        """Start failed members again (these, or every failed one), with the same settings."""
        status = self._state.status
        chosen = machine.validate_retry(status, request.members)
        if request.members and workflow.patched(PATCH_RETRY_EXCUSES_OTHERS):
            # The person retries these; the others that failed stay failed but no longer
            # hold the budget shut against the members retried.
            failed = {m.name for _, _, m in status.members() if m.state is State.FAILED}
            self._state.excused = sorted((set(self._state.excused) | failed) - chosen)
        self._reopen(failed_members=chosen)
        self._record(
            ControlAction.RETRY, request, ", ".join(request.members) or "every failed member"
        )
        return self._state.status

    @retry.validator
    def _validate_retry(self, request: RetryRequest) -> None:
        machine.validate_retry(self._state.status, request.members)

    # --- the run --------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: UpdateRunInput) -> RunStatus:
        self._details = asyncio.create_task(self._keep_details())
        if not self._state.run_instance:
            self._state.run_instance = workflow.info().first_execution_run_id
        status = self._state.status
        if status.state is State.NOT_STARTED:
            status.start_time = workflow.now()
            self._record(ControlAction.START, None, "run created")
        try:
            await self._lifecycle(request)
        except (asyncio.CancelledError, FailureError):
            # Cancelled, or failed by an error nothing absorbed: never keep the network.
            if self._state.holding_network and workflow.patched(PATCH_RELEASE_ON_ANY_END):
                await self._release()
            raise
        await workflow.wait_condition(workflow.all_handlers_finished)
        return status

    async def _lifecycle(self, request: UpdateRunInput) -> None:
        """Work, release, linger for resume and retry; again after each of them."""
        status = self._state.status
        while True:
            if not status.state.finished and self._state.plan is None:
                # First start, or a resume after the plan was rejected: plan (again).
                await self._prepare()
            if not status.state.finished:
                if not self._state.holding_network:
                    # Reopened after a stop or failure released the network: it may
                    # have changed meanwhile (queued joins and removals ran).
                    reopened = self._state.plan is not None
                    if (
                        await self._acquire()
                        and reopened
                        and workflow.patched(PATCH_REREAD_ON_REOPEN)
                    ):
                        await self._reread()
                if not status.state.finished:
                    await self._execute()
            await self._release()
            self._publish()
            # Resume and retry reopen the run by making its state unfinished again; a
            # control that arrived while we were releasing is seen here too.
            try:
                await workflow.wait_condition(
                    lambda: not status.state.finished,
                    timeout=request.timings.linger,
                    timeout_summary="open for resume and retry",
                )
            except TimeoutError:
                return
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(request.model_copy(update={"continued": self._state}))

    def _survives(self, error: ActivityError) -> bool:
        """Whether an activity error becomes a failed stage or run (else it is re-raised).

        Histories recorded before this rule replay with the old behaviour: the error
        failed the workflow there.
        """
        return workflow.patched(PATCH_SURVIVE_ACTIVITY_ERRORS)

    async def _prepare(self) -> None:
        """Take the network, read the members, plan."""
        status = self._state.status
        spec = self._input.spec
        status.state = State.RUNNING
        self._publish()
        if spec.upgrade_type is UpgradeType.NODE_IMAGE_ONLY:
            self._fail_run("upgradeType NodeImageOnly is not supported by meshfleet's backends yet")
            return
        if not await self._acquire():
            return
        if not self._state.network_members and workflow.patched(PATCH_REFUSE_EMPTY_NETWORK):
            self._fail_run(f"network {spec.network!r} has no members: there is nothing to update")
            return
        members = await self._prepare_step(
            contract.DESCRIBE_MEMBERS,
            contract.DescribeMembersRequest(members=self._state.network_members),
            list[Member],
            "read the members",
        )
        if members is None:
            return
        catalog = parse_catalog(self._input.catalog)
        target = Version.parse(spec.kubernetes_version or "")
        strategy = spec.strategy or one_by_one_strategy(members)
        if workflow.patched(PATCH_PLAN_RECORDED):
            recorded = await self._plan_once(members, strategy, target)
            if recorded is None:
                return
            run_plan = recorded
        else:
            try:
                run_plan = plan(
                    members,
                    strategy,
                    target,
                    catalog,
                    workflow.now(),
                    allow_multi_minor=spec.allow_multi_minor,
                )
            except InvalidInputError as error:
                self._fail_run("the plan was rejected: " + "; ".join(str(e) for e in error.errors))
                return
        cilium = catalog.cilium_for(target.minor_version)
        baseline = await self._prepare_step(
            contract.SERVICE_ENDPOINTS,
            contract.ServiceEndpointsRequest(members=self._state.network_members),
            contract.ServiceEndpointsResult,
            "record the global services' baseline",
        )
        if baseline is None:
            return
        status.target = VersionPair(
            kubernetes_version=str(target), cilium_version=str(cilium) if cilium else "?"
        )
        status.plan_hash = run_plan.plan_hash
        status.stages = status_from_plan(status, run_plan)
        self._state.plan = run_plan
        self._state.members = members
        self._state.baseline = baseline.ready
        self._publish()

    async def _prepare_step(
        self, name: str, request: object, result_type: type[T], summary: str
    ) -> T | None:
        """One activity of the run's preparation; None when it failed the run (kept open).

        Histories recorded before the survive-activity-errors patch raise as they did.
        """
        try:
            result: T = await workflow.execute_activity(
                name,
                request,
                result_type=result_type,
                start_to_close_timeout=QUICK,
                retry_policy=RUN_ACTIVITY_RETRY,
                summary=summary,
            )
        except ActivityError as error:
            if not self._survives(error):
                raise
            self._fail_run(f"cannot {summary}: {failure_reason(error)}")
            return None
        return result

    async def _plan_once(
        self, members: list[Member], strategy: UpdateStrategy, target: Version
    ) -> Plan | None:
        """The plan, computed by an activity so that its result is recorded in the history.

        A replay on a worker with newer planner code reads the recorded plan instead of
        planning again. None when the run failed (the plan was refused, or the activity
        could not run): the reason is in the status.
        """
        spec = self._input.spec
        request = contract.PlanRequest(
            members=members,
            strategy=strategy,
            target=str(target),
            catalog=self._input.catalog,
            at=workflow.now(),
            allow_multi_minor=spec.allow_multi_minor,
        )
        result = await self._prepare_step(
            contract.COMPUTE_PLAN, request, contract.PlanResult, "compute the plan"
        )
        if result is None:
            return None
        if result.plan is None:
            self._fail_run("the plan was rejected: " + "; ".join(result.errors))
            return None
        return result.plan

    async def _reread(self) -> None:
        """Resume and retry see the network as it is now; the plan itself is kept.

        Members that left are Skipped with the reason, newcomers are reported, waiting
        members start from the versions read now, and the baseline is recorded again.
        """
        status = self._state.status
        try:
            members: list[Member] = await workflow.execute_activity(
                contract.DESCRIBE_MEMBERS,
                contract.DescribeMembersRequest(members=self._state.network_members),
                result_type=list[Member],
                start_to_close_timeout=QUICK,
                retry_policy=RUN_ACTIVITY_RETRY,
                summary="read the members again",
            )
            baseline = await workflow.execute_activity(
                contract.SERVICE_ENDPOINTS,
                contract.ServiceEndpointsRequest(members=self._state.network_members),
                result_type=contract.ServiceEndpointsResult,
                start_to_close_timeout=QUICK,
                retry_policy=RUN_ACTIVITY_RETRY,
                summary="record the global services' baseline again",
            )
        except ActivityError as error:
            self._fail_run(f"cannot read the network again: {failure_reason(error)}")
            return
        machine.reconcile_membership(status, self._state.network_members, members)
        self._state.members = members
        self._state.baseline = baseline.ready
        self._bump()

    async def _acquire(self) -> bool:
        try:
            leased = await workflow.execute_activity(
                contract.ACQUIRE_NETWORK,
                contract.NetworkLease(network=self._input.spec.network, run_id=self._input.run_id),
                result_type=contract.LeasedNetwork,
                start_to_close_timeout=QUICK,
                retry_policy=RUN_ACTIVITY_RETRY,
                summary=f"take network {self._input.spec.network}",
            )
        except ActivityError as error:
            self._fail_run(failure_reason(error))
            if workflow.patched(PATCH_RELEASE_AFTER_FAILED_ACQUIRE):
                # The network may have granted it after this side gave up: give it back.
                with contextlib.suppress(ActivityError):
                    await workflow.execute_activity(
                        contract.RELEASE_NETWORK,
                        contract.NetworkLease(
                            network=self._input.spec.network, run_id=self._input.run_id
                        ),
                        start_to_close_timeout=QUICK,
                        retry_policy=BEST_EFFORT_RETRY,
                        summary=f"release network {self._input.spec.network} (acquire failed)",
                    )
            return False
        self._state.holding_network = True
        self._state.network_members = leased.members
        self._state.network_left_drained = leased.left_drained
        return True

    async def _release(self) -> None:
        if not self._state.holding_network:
            return
        await workflow.execute_activity(
            contract.RELEASE_NETWORK,
            contract.NetworkLease(network=self._input.spec.network, run_id=self._input.run_id),
            start_to_close_timeout=QUICK,
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
            summary=f"release network {self._input.spec.network}",
        )
        self._state.holding_network = False

    async def _execute(self) -> None:
        status = self._state.status
        status.state = State.STOPPING if self._state.stop_requested else State.RUNNING
        status.completed_time = None
        self._failed_reason = None
        self._publish()
        self._can_while_waiting = workflow.patched(PATCH_CONTINUE_AS_NEW_WHILE_WAITING)
        while True:
            reopens = self._reopens
            stages = [s for s in status.stages if not s.state.finished]
            await self._work_or_continue_as_new(
                asyncio.gather(*(self._run_stage(s) for s in stages))
            )
            if (
                self._reopens != reopens
                and not self._halted()
                and status.state is State.RUNNING
                and workflow.patched(PATCH_RESUME_WHILE_STOPPING)
            ):
                continue  # resumed while Stopping: what had already halted goes on
            break
        self._settle()

    async def _work_or_continue_as_new(self, work: asyncio.Future[list[None]]) -> None:
        """Wait for the stages; continue as new meanwhile when the history is long and the
        run only waits (a soak, a window, a gate) with nothing in flight."""
        while self._can_while_waiting and not work.done():
            await workflow.wait_condition(lambda: work.done() or self._may_continue_as_new())
            if not work.done():
                await workflow.wait_condition(workflow.all_handlers_finished)
                if self._may_continue_as_new():
                    self._continue_as_new()
        await work

    @contextlib.contextmanager
    def _working(self) -> Iterator[None]:
        """An activity of the run is in flight: no continue-as-new until it has answered."""
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1

    def _may_continue_as_new(self) -> bool:
        """Long enough a history, and a safe moment: nothing in flight, only waits."""
        info = workflow.info()
        long_enough = (
            info.get_current_history_length() >= self._input.timings.max_history_events
            or info.is_continue_as_new_suggested()
        )
        return long_enough and not self._halted() and not self._in_flight and self._busy == 0

    def _continue_as_new(self) -> NoReturn:
        """Carry the whole state into a fresh history; waits resume where they were."""
        now = workflow.now()
        for stage in self._state.status.stages:
            wait = stage.after_stage_wait
            if wait is not None and wait.state is State.RUNNING and wait.until is not None:
                left = max(wait.until - now, timedelta(0))
                wait.served_seconds = wait.seconds - left.total_seconds()
        workflow.continue_as_new(self._input.model_copy(update={"continued": self._state}))

    def _settle(self) -> None:
        """The run's state once no stage can move any more."""
        status = self._state.status
        machine.settle(
            status,
            failed_reason=self._failed_reason,
            stop_requested=self._state.stop_requested,
            now=workflow.now(),
        )
        status.completed_time = workflow.now()
        status.current_stage = None
        loud = contract.left_drained_line(status.left_drained)
        if loud is not None and not (status.error or "").startswith("LEFT DRAINED"):
            status.error = f"{loud}; {status.error}" if status.error else loud
        self._publish()

    def _halted(self) -> bool:
        return self._state.stop_requested or self._failed_reason is not None

    def _fail_run(self, reason: str) -> None:
        self._failed_reason = reason
        status = self._state.status
        status.state = State.FAILED
        status.error = reason
        status.completed_time = workflow.now()
        self._bump()

    # --- stages ---------------------------------------------------------------------------

    async def _run_stage(self, stage: StageStatus) -> None:
        status = self._state.status
        by_name = {s.name: s for s in status.stages}
        deps = [by_name[name] for name in stage.depends_on]
        # A skipped stage is done at once, but its members in flight still run.
        wait_in_flight = bool(deps) and workflow.patched(PATCH_DEPENDENTS_WAIT_IN_FLIGHT)
        await workflow.wait_condition(
            lambda: (
                self._halted()
                or stage.state.finished
                or (
                    all(d.state.finished for d in deps)
                    and not (wait_in_flight and self._in_flight_in(deps))
                )
            )
        )
        if stage.state.finished or self._halted() or not all(d.state.done for d in deps):
            return
        stage.state = State.RUNNING
        stage.start_time = stage.start_time or workflow.now()
        stage.message = None
        status.current_stage = stage.name
        self._publish()
        if not await self._pass_gates(stage.before_gates, stage):
            return
        timeout = self._health.mesh_ready_timeout
        if stage.name not in self._state.checked_before:
            if not await self._mesh_gate(stage, "before", timeout):
                return
            if self._can_while_waiting:
                self._state.checked_before.append(stage.name)
        await asyncio.gather(*(self._run_group(stage, g) for g in stage.groups))
        stage.failure_count = sum(g.failure_count for g in stage.groups)
        failure = machine.stage_failure(stage, self._state.excused)
        if failure is not None:
            self._fail_stage(stage, failure)
            return
        if stage.state is State.SKIPPED:
            return
        if self._halted() or any(not g.state.finished for g in stage.groups):
            return
        if stage.name not in self._state.checked_after:
            if not await self._mesh_gate(stage, "after", timeout):
                return
            if not await self._endpoints_gate(stage, timeout):
                return
            if self._can_while_waiting:
                self._state.checked_after.append(stage.name)
        if not await self._soak(stage, self._health.soak_check_interval):
            return
        if not await self._pass_gates(stage.after_gates, stage):
            return
        if _skipped(stage):  # skipped during its after-checks: it stays so
            return
        stage.state = State.COMPLETED
        stage.completed_time = workflow.now()
        self._bump()

    def _fail_stage(self, stage: StageStatus, message: str) -> None:
        """Fail ``stage`` (and so the run), unless it was skipped: Skipped is never overwritten."""
        if stage.state is State.SKIPPED and workflow.patched(PATCH_SKIPPED_STAGE_STAYS_SKIPPED):
            return
        stage.state = State.FAILED
        stage.message = message
        stage.completed_time = workflow.now()
        if self._failed_reason is None:
            self._failed_reason = f"stage {stage.name} failed: {message}"
        self._bump()

    def _check_broke(self, stage: StageStatus, check: str, error: ActivityError) -> bool:
        """A gate's or soak's read failed for good: the stage fails (the run stays open)."""
        if not self._survives(error):
            raise error
        self._fail_stage(stage, f"{check} could not be checked: {failure_reason(error)}")
        return False

    async def _mesh_gate(self, stage: StageStatus, when: str, timeout: timedelta) -> bool:
        """Built-in gate: the whole mesh healthy (cannot be switched off, only tuned)."""
        try:
            with self._working():
                result = await workflow.execute_activity(
                    contract.CHECK_MESH_HEALTH,
                    contract.MeshHealthRequest(
                        members=self._state.network_members, timeout=timeout
                    ),
                    result_type=contract.MeshHealthResult,
                    start_to_close_timeout=timeout + MARGIN,
                    heartbeat_timeout=self._input.timings.heartbeat_timeout,
                    retry_policy=RUN_ACTIVITY_RETRY,
                    summary=f"mesh health {when} stage {stage.name}",
                )
        except ActivityError as error:
            return self._check_broke(stage, f"mesh health {when} the stage", error)
        if result.healthy:
            return True
        links = "; ".join(
            f"{link.viewer} -> {link.peer}: {link.reason}" for link in result.not_ready[:5]
        )
        self._fail_stage(stage, f"mesh not healthy {when} the stage: {links}")
        return False

    async def _endpoints_gate(self, stage: StageStatus, timeout: timedelta) -> bool:
        """Built-in gate: every global service back to its baseline of ready endpoints."""
        try:
            with self._working():
                result = await workflow.execute_activity(
                    contract.SERVICE_ENDPOINTS,
                    contract.ServiceEndpointsRequest(
                        members=self._state.network_members,
                        baseline=self._state.baseline,
                        timeout=timeout,
                    ),
                    result_type=contract.ServiceEndpointsResult,
                    start_to_close_timeout=timeout + MARGIN,
                    heartbeat_timeout=self._input.timings.heartbeat_timeout,
                    retry_policy=RUN_ACTIVITY_RETRY,
                    summary=f"endpoints back to baseline after stage {stage.name}",
                )
        except ActivityError as error:
            return self._check_broke(stage, "the endpoints baseline after the stage", error)
        if not result.below_baseline:
            return True
        self._fail_stage(
            stage, f"global services below their baseline: {', '.join(result.below_baseline)}"
        )
        return False

    async def _soak(self, stage: StageStatus, interval: timedelta) -> bool:
        """``afterStageWait``: watch health until it ends; a failed check fails the stage."""
        wait = stage.after_stage_wait
        if wait is None or wait.state.finished:
            return True
        upgraded = any(m.state is State.COMPLETED for g in stage.groups for m in g.members)
        if not upgraded and workflow.patched(PATCH_SOAK_ONLY_AFTER_UPGRADES):
            wait.state = State.SKIPPED
            wait.message = "nothing was upgraded in this stage: no soak needed"
            self._bump()
            return True
        keeps_served = workflow.patched(PATCH_SOAK_KEEPS_SERVED)
        served = timedelta(seconds=wait.served_seconds if keeps_served else 0)
        wait.state = State.RUNNING
        wait.until = workflow.now() + timedelta(seconds=wait.seconds) - served
        self._bump()
        while wait.state is State.RUNNING:
            left = wait.until - workflow.now()
            if left <= timedelta(0):
                break
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: wait.state is not State.RUNNING or self._halted(),
                    timeout=min(interval, left),
                    timeout_summary=f"soak after stage {stage.name}",
                )
            if self._halted():
                if keeps_served:
                    left = max(wait.until - workflow.now(), timedelta(0))
                    wait.served_seconds = wait.seconds - left.total_seconds()
                return False
            if wait.state is not State.RUNNING:
                break
            wait.checks += 1
            try:
                with self._working():
                    check = await workflow.execute_activity(
                        contract.CHECK_MESH_HEALTH,
                        contract.MeshHealthRequest(members=self._state.network_members),
                        result_type=contract.MeshHealthResult,
                        start_to_close_timeout=QUICK,
                        retry_policy=RUN_ACTIVITY_RETRY,
                        summary=f"soak check {wait.checks} of stage {stage.name}",
                    )
            except ActivityError as error:
                wait.state = State.FAILED
                return self._check_broke(stage, f"soak check {wait.checks}", error)
            if not check.healthy:
                wait.state = State.FAILED
                links = "; ".join(
                    f"{link.viewer} -> {link.peer}: {link.reason}" for link in check.not_ready[:5]
                )
                self._fail_stage(stage, f"health check failed during the soak: {links}")
                return False
        if wait.state is State.RUNNING:
            wait.state = State.COMPLETED
        self._bump()
        return True

    async def _pass_gates(self, gates: list[GateStatus], owner: StageStatus | GroupStatus) -> bool:
        """Wait for each gate; ScheduledStart opens by itself at its time (or by approval)."""
        for gate in gates:
            if gate.state in (GateState.COMPLETED, GateState.SKIPPED):
                continue
            gate.state = GateState.PENDING
            owner.state = State.PENDING
            timeout: timedelta | None = None
            if gate.kind is GateKind.SCHEDULED_START:
                opens = next_scheduled_start(
                    Gate(
                        type=GateType.SCHEDULED_START,
                        start_day=DayOfWeek(gate.start_day) if gate.start_day else None,
                        start_time=gate.start_time,
                        utc_offset=gate.utc_offset,
                    ),
                    workflow.now(),
                )
                gate.opens_at = opens
                timeout = max(opens - workflow.now(), timedelta(0))
                gate.message = f"opens at {opens.isoformat()}"
            else:
                gate.message = f"waiting for approval: meshfleet run approve RUN {gate.id}"
            self._bump()
            waiting_since = workflow.now()
            try:
                await workflow.wait_condition(
                    lambda gate=gate: gate.state is not GateState.PENDING or self._halted(),  # type: ignore[misc]
                    timeout=timeout,
                    timeout_summary=f"gate {gate.id}",
                )
            except TimeoutError:
                gate.state = GateState.COMPLETED
                gate.completed_at = workflow.now()
                gate.completed_by = "schedule"
            if gate.state is GateState.PENDING:  # halted while waiting
                return False
            _record_gate_wait(gate.kind, workflow.now() - waiting_since)
            if gate.state is GateState.SKIPPED and owner.state is State.SKIPPED:
                return False  # the owner was skipped while its gate waited
            gate.message = None
            owner.state = State.RUNNING
            self._bump()
        return True

    # --- groups and members ---------------------------------------------------------------

    async def _run_group(self, stage: StageStatus, group: GroupStatus) -> None:
        if group.state.finished:
            return
        group.state = State.RUNNING
        self._bump()
        if not await self._pass_gates(group.before_gates, group):
            return
        members: list[asyncio.Task[None]] = []
        while True:
            in_group = [m for m in group.members if m.name in self._in_flight]
            budget_blown = (
                machine.counted_failures(group.members, self._state.excused)
                > group.max_allowed_failures
            )
            waiting = [m for m in group.members if m.state in (State.NOT_STARTED, State.PENDING)]
            if (
                self._halted()
                or budget_blown
                or not machine.may_launch(stage, group)
                or not waiting
            ):
                if not in_group:
                    break
                await self._next_change()
                continue
            candidate, wake_at = self._pick(stage, group, waiting)
            if candidate is not None:
                self._launch(stage, group, candidate)
                members.append(asyncio.create_task(self._update_member(stage, group, candidate)))
                continue
            if not in_group and not self._in_flight and wake_at is None:
                machine.give_up(group, waiting, workflow.now())
                self._bump()
                continue
            await self._next_change(wake_at)
        await asyncio.gather(*members)
        group.failure_count = sum(1 for m in group.members if m.state is State.FAILED)
        if group.state is State.SKIPPED:
            return
        if (
            machine.counted_failures(group.members, self._state.excused)
            > group.max_allowed_failures
        ):
            group.state = State.FAILED
            group.message = machine.over_budget(
                "group",
                group.name,
                machine.counted_failures(group.members, self._state.excused),
                group.max_allowed_failures,
            )
            self._bump()
            return
        if self._halted() or any(not m.state.finished for m in group.members):
            return
        if not await self._pass_gates(group.after_gates, group):
            return
        group.state = State.COMPLETED
        self._bump()

    def _pick(
        self, stage: StageStatus, group: GroupStatus, waiting: list[MemberStatus]
    ) -> tuple[MemberStatus | None, dt.datetime | None]:
        """The next member to start now, or when to look again (the pure scheduler's)."""
        if self._shared_order is None:
            self._shared_order = workflow.patched(PATCH_SHARED_MEMBER_ORDER)
        return machine.pick(
            stage,
            group,
            waiting,
            in_flight=self._in_flight,
            windows={m.name: m.maintenance_window for m in self._state.members},
            fleet_window=self._input.spec.fleet_window,
            now=workflow.now(),
            deferred=self._state.deferred,
            completions=self._state.completions,
            versions=self._versions,
            shared_order=self._shared_order,
        )

    def _in_flight_in(self, stages: list[StageStatus]) -> bool:
        names = {s.name for s in stages}
        return any(stage in names for stage, _ in self._in_flight.values())

    def _versions(self) -> list[MemberVersions]:
        found = []
        for _, _, member in self._state.status.members():
            done = member.state is State.COMPLETED
            moving = member.name in self._in_flight or member.state is State.FAILED
            found.append(
                MemberVersions(
                    name=member.name,
                    current=member.to if done else member.from_,
                    target=member.to,
                    moving=moving,
                )
            )
        return found

    def _launch(self, stage: StageStatus, group: GroupStatus, member: MemberStatus) -> None:
        """Mark ``member`` in flight now (before its task runs), so the scheduler sees it."""
        member.state = State.RUNNING
        member.attempts += 1
        member.start_time = workflow.now()
        member.completed_time = None
        member.pending_until = None
        member.message = None
        # Who is in flight *before* this member: the first of two launched together
        # proceeds, the second sees the first (not both seeing each other and deferring).
        self._in_flight_before[member.name] = sorted(self._in_flight)
        self._in_flight[member.name] = (stage.name, group.name)
        self._launched_at[member.name] = self._state.completions
        self._bump()

    async def _update_member(
        self, stage: StageStatus, group: GroupStatus, member: MemberStatus
    ) -> None:
        status = self._state.status
        others = self._in_flight_before.pop(member.name, [])
        assert status.target is not None
        listed, roster = member_roster(self._state.run_instance, self._state.network_members)
        request = MemberUpdateInput(
            run_id=self._input.run_id,
            network=status.network,
            member=member.name,
            attempt=member.attempts,
            run_instance=self._state.run_instance,
            upgrade_type=status.upgrade_type,
            hops=member.hops,
            target=status.target,
            network_members=listed,
            roster=roster,
            in_flight=others,
            min_ready_endpoints=self._health.min_ready_endpoints,
            mesh_ready_timeout=self._health.mesh_ready_timeout,
            timings=self._input.timings,
        )
        # h-ops: histories recorded before the patch started children without it.
        member_attributes = (
            TypedSearchAttributes(
                [
                    SearchAttributePair(NETWORK_KEY, status.network),
                    SearchAttributePair(MEMBER_KEY, [member.name]),
                ]
            )
            if workflow.patched(MEMBER_SEARCH_ATTRIBUTE_PATCH)
            else None
        )
        try:
            result: MemberUpdateResult = await workflow.execute_child_workflow(
                contract.MEMBER_UPDATE_WORKFLOW,
                request,
                id=contract.member_workflow_id(status.network, status.run_id, member.name),
                result_type=MemberUpdateResult,
                parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
                search_attributes=member_attributes,
                static_summary=(
                    f"{member.name}: {member.from_.kubernetes_version} "
                    f"-> {member.to.kubernetes_version}"
                ),
            )
        except ChildWorkflowError as error:
            result = MemberUpdateResult(outcome=MemberOutcome.FAILED, message=failure_reason(error))
        del self._in_flight[member.name]
        member.step = result.step
        member.message = result.message
        if machine.member_finished(group, member, result.outcome, workflow.now()):
            self._state.completions += 1
            if member.state is State.FAILED:
                self._cascade(stage, group)
        else:
            self._state.deferred[member.name] = self._launched_at[member.name]
        self._bump()
        await self._left_drained(member.name, result)

    async def _left_drained(self, member: str, result: MemberUpdateResult) -> None:
        """Say loudly what a member's restore left drained: in the run and to the network.

        The run's status lists it (and its ``error`` leads with it once the run ends);
        the network is told, so ``network show`` lists it. A member listed (by this run
        or, when the run took the network, by an earlier one) that later completes was
        drained and restored again (the drain's record on the Service keeps the values
        from before the first drain), so it is drained no more: both lists drop it.
        """
        status = self._state.status
        services = result.left_drained
        listed = member in status.left_drained or member in self._state.network_left_drained
        if not services and not (listed and result.outcome is MemberOutcome.COMPLETED):
            return  # always so in histories recorded before ``left_drained`` existed
        if services:
            status.left_drained[member] = list(services)
        else:
            status.left_drained.pop(member, None)
            self._state.network_left_drained = [
                m for m in self._state.network_left_drained if m != member
            ]
        self._bump()
        if not workflow.patched(PATCH_REPORT_LEFT_DRAINED):
            return
        report = contract.LeftDrainedReport(
            network=status.network, run_id=status.run_id, member=member, services=services
        )
        try:
            await workflow.execute_activity(
                contract.REPORT_LEFT_DRAINED,
                report,
                start_to_close_timeout=QUICK,
                retry_policy=RUN_ACTIVITY_RETRY,
                summary=f"report {member} {'left drained' if services else 'restored'}",
            )
        except ActivityError as error:
            # The run's own status still says it; only the network could not be told.
            workflow.logger.warning(
                "run.left_drained_unreported",
                extra={"member": member, "error": failure_reason(error)},
            )

    def _cascade(self, stage: StageStatus, group: GroupStatus) -> None:
        """A failure no budget absorbs dooms the run: nothing new starts anywhere in it."""
        if self._failed_reason is not None:
            return
        reason = budget_exceeded(stage, group, self._state.excused)
        if reason is not None and workflow.patched(PATCH_BUDGET_HALTS_RUN):
            self._failed_reason = f"stage {stage.name} failed: {reason}"

    # --- controls' effects ----------------------------------------------------------------

    def _reopen(self, failed_members: set[str] | None) -> None:
        """Resume (``None``: every failed member) or retry (these): make them startable again."""
        self._state.stop_requested = False
        self._failed_reason = None
        reopened = machine.reopen(self._state.status, failed_members)
        self._reopens += 1
        # A stage that starts again checks the mesh again, before and after its groups.
        again = {s.name for s in self._state.status.stages if s.state is State.NOT_STARTED}
        self._state.checked_before = [n for n in self._state.checked_before if n not in again]
        self._state.checked_after = [n for n in self._state.checked_after if n not in again]
        if failed_members is None:
            self._state.excused = []
        else:
            self._state.excused = [n for n in self._state.excused if n not in failed_members]
        if reopened and workflow.patched(PATCH_REOPEN_CLEARS_DEFERRAL):
            # A member given up on (continuity) starts afresh, not deferred again at once.
            for name in reopened:
                self._state.deferred.pop(name, None)
        self._bump()

    def _record(
        self, action: ControlAction, request: contract.Control | None, details: str | None = None
    ) -> None:
        self._state.status.controls.append(
            ControlRecord(
                action=action,
                at=workflow.now(),
                identity=request.identity if request else "meshfleet",
                reason=request.reason if request else None,
                details=details,
            )
        )
        self._bump()

    # --- change tracking and the Web UI ----------------------------------------------------

    def _bump(self) -> None:
        self._changes += 1
        self._publish()

    async def _next_change(self, until: dt.datetime | None = None) -> None:
        """Wait for any change of the run, or until ``until`` (a window's opening)."""
        seen = self._changes
        if until is not None:
            if self._alarms_on is None:
                self._alarms_on = workflow.patched(PATCH_ONE_TIMER_PER_OPENING)
            if self._alarms_on:
                # One timer per opening, however often the run changes meanwhile.
                self._alarm(until)
                await workflow.wait_condition(lambda: self._changes != seen)
                return
        timeout = max(until - workflow.now(), timedelta(seconds=1)) if until else None
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self._changes != seen,
                timeout=timeout,
                timeout_summary="next window opening",
            )

    def _alarm(self, at: dt.datetime) -> None:
        """Make sure one timer rings (counts as a change) at ``at``."""
        if at in self._alarms:
            return

        async def ring() -> None:
            await workflow.sleep(
                max(at - workflow.now(), timedelta(seconds=1)), summary="next window opening"
            )
            del self._alarms[at]
            self._bump()

        self._alarms[at] = asyncio.create_task(ring())

    async def _keep_details(self) -> None:
        """Render the Web UI's current details once per batch of status edits.

        Rendering reads every member, and an activation can edit the status once per
        member event; waiting for the edits to settle makes that once per activation.
        Details are no command, so this adds nothing to history (replay is unchanged).
        """
        while True:
            await workflow.wait_condition(lambda: self._status_edits != self._rendered_edits)
            self._rendered_edits = self._status_edits
            workflow.set_current_details(details_markdown(self._state.status))

    def _publish(self) -> None:
        """Keep the search attributes (now) and the Web UI's current details (soon) up to date."""
        self._status_edits += 1
        status = self._state.status
        pairs: list[SearchAttributeUpdate[str]] = [
            NETWORK_KEY.value_set(status.network),
            STATE_KEY.value_set(status.state.value),
        ]
        if status.target is not None:
            pairs.append(TARGET_KEY.value_set(status.target.kubernetes_version))
        if status.current_stage:
            pairs.append(STAGE_KEY.value_set(status.current_stage))
        signature = tuple((p.key.name, str(p.value)) for p in pairs)
        if signature != self._published:
            workflow.upsert_search_attributes(pairs)
            self._published = signature


def _record_gate_wait(kind: GateKind, waited: timedelta) -> None:
    """Observe a gate's wait on the worker's meter (replay-safe: never during replay)."""
    workflow.metric_meter().create_histogram_float(
        contract.GATE_WAIT_METRIC, contract.GATE_WAIT_DESCRIPTION, "s"
    ).record(waited.total_seconds(), {"kind": kind.value})


def _skipped(owner: StageStatus | GroupStatus) -> bool:
    """Read the owner's state afresh (a control may have skipped it during an await)."""
    return owner.state is State.SKIPPED


def is_open_or_none(window: MaintenanceWindow | None, now: dt.datetime) -> bool:
    """Open now, or no window at all (those go first among a group's members)."""
    return window is None or is_open(window, now)
