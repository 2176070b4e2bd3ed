"""The update run's groups: which member starts when, its child workflow, its result."""

from __future__ import annotations

import asyncio
import datetime as dt

from temporalio import workflow
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
)
from temporalio.exceptions import ActivityError, ChildWorkflowError
from temporalio.workflow import ParentClosePolicy

from engine.domain import run as contract
from engine.domain.failures import failure_text
from engine.domain.run import (
    GroupStatus,
    MemberOutcome,
    MemberStatus,
    MemberUpdateInput,
    MemberUpdateResult,
    StageStatus,
    State,
)
from strategies import run_machine as machine
from strategies.progress import MemberVersions
from strategies.run_machine import budget_exceeded
from workflows.member_roster import member_roster
from workflows.policies import QUICK, RUN_RETRY
from workflows.run_core import MEMBER_KEY, NETWORK_KEY
from workflows.run_gates import RunGates
from workflows.run_patches import (
    MEMBER_SEARCH_ATTRIBUTE_PATCH,
    PATCH_BUDGET_HALTS_RUN,
    PATCH_MEMBER_RECORD_FIRST_BY_INPUT,
    PATCH_REPORT_LEFT_DRAINED,
    PATCH_SHARED_MEMBER_ORDER,
)


class RunMembers(RunGates):
    """Runs a group's members within its budgets, windows and the version-skew rule."""

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
        self._launches += 1
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
            record_first=workflow.patched(PATCH_MEMBER_RECORD_FIRST_BY_INPUT),
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
            result = MemberUpdateResult(outcome=MemberOutcome.FAILED, message=failure_text(error))
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
                retry_policy=RUN_RETRY,
                summary=f"report {member} {'left drained' if services else 'restored'}",
            )
        except ActivityError as error:
            # The run's own status still says it; only the network could not be told.
            workflow.logger.warning(
                "run.left_drained_unreported",
                extra={"member": member, "error": failure_text(error)},
            )

    def _cascade(self, stage: StageStatus, group: GroupStatus) -> None:
        """A failure no budget absorbs dooms the run: nothing new starts anywhere in it."""
        if self._failed_reason is not None:
            return
        reason = budget_exceeded(stage, group, self._state.excused)
        if reason is not None and workflow.patched(PATCH_BUDGET_HALTS_RUN):
            self._failed_reason = f"stage {stage.name} failed: {reason}"
