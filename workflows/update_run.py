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
from datetime import timedelta
from typing import NoReturn

from temporalio import workflow
from temporalio.exceptions import FailureError

from engine.domain import run as contract
from engine.domain.roster import QUERY_ROSTER, RunRoster
from engine.domain.run import (
    ApproveRequest,
    ControlAction,
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
from engine.domain.strategy import HealthSpec
from strategies import run_machine as machine
from workflows.run_gates import is_skipped
from workflows.run_members import RunMembers
from workflows.run_patches import (
    PATCH_CONTINUE_AS_NEW_WHILE_WAITING,
    PATCH_DEPENDENTS_WAIT_IN_FLIGHT,
    PATCH_RELEASE_ON_ANY_END,
    PATCH_REOPEN_CLEARS_DEFERRAL,
    PATCH_REREAD_ON_REOPEN,
    PATCH_RESUME_WHILE_STOPPING,
    PATCH_RETRY_EXCUSES_OTHERS,
    PATCH_SKIP_RELEASES_GATES,
)
from workflows.run_preparation import RunPreparation


@workflow.defn(name=contract.UPDATE_RUN_WORKFLOW)
class UpdateRunWorkflow(RunPreparation, RunMembers):
    """One update run of one network (id ``updaterun/<network>/<run>``)."""

    @workflow.init
    def __init__(self, request: UpdateRunInput) -> None:
        # Each field is explained where it is declared: ``RunCore`` (workflows/run_core.py).
        self._input = request
        spec = request.spec
        self._state = request.continued or RunState(
            status=RunStatus(
                run_id=request.run_id,
                name=spec.name or request.run_id,
                network=spec.network,
                upgrade_type=spec.upgrade_type,
                strategy_name=spec.strategy.metadata.name if spec.strategy else spec.strategy_ref,
            )
        )
        self._in_flight = {}
        self._launched_at = {}
        self._in_flight_before = {}
        self._changes = 0
        self._failed_reason = None
        self._reopens = 0
        self._busy = 0
        self._can_while_waiting = False
        self._alarms = {}
        self._alarms_on = None
        self._shared_order = None
        self._health = spec.strategy.spec.health if spec.strategy else HealthSpec()
        self._launches = 0
        self._healthy_mesh = None
        self._published = ()
        self._status_edits = 0
        self._rendered_edits = -1
        self._details = None

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
        if stage.state.finished or self._halted() or not all(d.state.satisfied for d in deps):
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
            if not self._mesh_still_healthy() and not await self._mesh_gate(
                stage, "before", timeout
            ):
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
            if not await self._after_checks(stage, timeout):
                return
            if self._can_while_waiting:
                self._state.checked_after.append(stage.name)
        if not await self._soak(stage, self._health.soak_check_interval):
            return
        if not await self._pass_gates(stage.after_gates, stage):
            return
        if is_skipped(stage):  # skipped during its after-checks: it stays so
            return
        stage.state = State.COMPLETED
        stage.completed_time = workflow.now()
        self._bump()

    # --- controls' effects ----------------------------------------------------------------

    def _reopen(self, failed_members: set[str] | None) -> None:
        """Resume (``None``: every failed member) or retry (these): make them startable again."""
        self._state.stop_requested = False
        self._failed_reason = None
        self._healthy_mesh = None  # a stage started again asks the mesh again
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
