"""One member's update: preflight, drain, control plane, bundled Cilium, verify, restore.

Each step is an activity with its own timeout, retry policy and heartbeat.
The drain is two activities: annotating returns the record (the exact previous
annotations) before anything waits, then a second one waits for the peers. So
the workflow holds the record whatever happens next, and the restore runs
whenever anything was annotated: after a failed step (the drain's own wait
included), and after a cancellation. A member ended by its parent's end (the
run completed, failed or was terminated) is *cancelled*, not terminated: the
run starts its members with ``ParentClosePolicy.REQUEST_CANCEL``, and a
terminated workflow could run no restore at all. Annotating is shielded from
that cancellation (the workflow waits for its record) and so is the restore.
If the restore cannot put a service back, the member fails saying so: its
message names the member and the services left drained, and
``MemberUpdateResult.left_drained`` lists them.

Histories recorded before the ``drain-record-first`` patch replay the earlier
sequence (one activity annotating and waiting, one restoring and waiting).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, is_cancelled_exception

from engine.domain import run as contract
from engine.domain.backend import OperationProgress
from engine.domain.failures import failure_text
from engine.domain.plan import VersionPair
from engine.domain.run import (
    MemberOutcome,
    MemberStep,
    MemberUpdateInput,
    MemberUpdateResult,
    PreflightOutcome,
)
from engine.domain.runspec import UpgradeType
from workflows.member_restore import Restored
from workflows.policies import MARGIN, QUICK, RESTORE_RETRY, RESTORE_UNTIL_TIMEOUT, STEP_RETRY

#: The patch that split drain and restore into "change, then wait" (see the module doc).
DRAIN_RECORD_FIRST = "drain-record-first"
#: The activity of each step that waits on the fleet.
_STEP_ACTIVITIES = {
    MemberStep.DRAIN: contract.DRAIN,
    MemberStep.CONTROL_PLANE: contract.UPGRADE_CONTROL_PLANE,
    MemberStep.CILIUM: contract.UPGRADE_CILIUM,
    MemberStep.VERIFY: contract.VERIFY,
}
T = TypeVar("T")


@workflow.defn(name=contract.MEMBER_UPDATE_WORKFLOW)
class MemberUpdateWorkflow:
    """Upgrades one member of a run; the run workflow is its parent."""

    def __init__(self) -> None:
        self._step: MemberStep | None = None
        #: What the drain annotated, held from the moment annotating returned.
        self._drain: contract.DrainRecord | None = None

    @workflow.query
    def step(self) -> MemberStep | None:
        """The step in progress (None before the first and after the last)."""
        return self._step

    @workflow.run
    async def run(self, member: MemberUpdateInput) -> MemberUpdateResult:
        self._step = MemberStep.PREFLIGHT
        preflight = await workflow.execute_activity(
            contract.PREFLIGHT,
            member,
            result_type=contract.PreflightResult,
            start_to_close_timeout=QUICK,
            retry_policy=STEP_RETRY,
            summary=f"preflight {member.member}",
        )
        if preflight.outcome is PreflightOutcome.AT_TARGET:
            return self._ended(MemberOutcome.SKIPPED, preflight.message, preflight.current)
        if preflight.outcome is PreflightOutcome.DEFERRED:
            return self._ended(MemberOutcome.DEFERRED, preflight.message, preflight.current)
        if preflight.outcome is PreflightOutcome.REFUSED:
            return self._ended(MemberOutcome.FAILED, preflight.message, preflight.current)

        # The run says so (since ``run-member-record-first-by-input``): no patch call, so
        # no marker and no search-attribute upsert. Older inputs ask, as recorded.
        if not member.record_first and not workflow.patched(DRAIN_RECORD_FIRST):
            return await self._steps_before_record_first(member)
        return await self._steps(member)

    async def _steps(self, member: MemberUpdateInput) -> MemberUpdateResult:
        """Drain (annotate, then wait), upgrade hop by hop, verify; restore whatever happens."""
        failure: str | None = None
        failed_step: MemberStep | None = None
        # Later steps get only the member lists they read: each input is kept in history.
        step_input = member.for_step()
        hop_input = member.for_step(reads_members=False)
        timings = member.timings
        restored: Restored | None = None
        try:
            drain = await self._annotate(step_input)
            await self._waiting_step(
                MemberStep.DRAIN,
                member,
                contract.DrainWaitRequest(member=step_input, drain=drain),
                waits=timings.drain_timeout,
                summary=f"wait until peers stop routing to {member.member}",
                activity=contract.DRAIN_WAIT,
            )
            if member.upgrade_type is not UpgradeType.NODE_IMAGE_ONLY:
                for index, hop in enumerate(member.hops):
                    request = contract.HopRequest(member=hop_input, hop=hop, hop_index=index)
                    await self._waiting_step(
                        MemberStep.CONTROL_PLANE,
                        member,
                        request,
                        waits=timings.control_plane_timeout,
                        summary=f"control plane {member.member} -> {hop.kubernetes_version}",
                        result_type=OperationProgress,
                    )
                    await self._waiting_step(
                        MemberStep.CILIUM,
                        member,
                        request,
                        waits=timings.cilium_timeout,
                        summary=f"cilium {member.member} -> {hop.cilium_version}",
                        result_type=OperationProgress,
                    )
            await self._waiting_step(
                MemberStep.VERIFY,
                member,
                contract.VerifyRequest(member=step_input, drain=drain),
                waits=member.mesh_ready_timeout,
                summary=f"verify {member.member}",
            )
        except ActivityError as error:
            failed_step = self._step
            failure = "cancelled" if is_cancelled_exception(error) else failure_text(error)
        except asyncio.CancelledError:
            # Cancelled outside an activity (between steps, or while annotating).
            failure, failed_step = "cancelled", self._step
        finally:
            if self._drain is not None and self._drain.changes:
                # Shielded: a cancelled member still puts its services back.
                restored = await asyncio.shield(
                    asyncio.ensure_future(self._restore_pair(step_input, self._drain))
                )
        return self._outcome(member, failure, failed_step, restored)

    async def _annotate(self, member: MemberUpdateInput) -> contract.DrainRecord:
        """Annotate and hold the record; a cancel while annotating lets it finish first."""
        self._step = MemberStep.DRAIN
        annotating = workflow.start_activity(
            contract.DRAIN_ANNOTATE,
            member,
            result_type=contract.DrainRecord,
            start_to_close_timeout=QUICK,
            retry_policy=STEP_RETRY,
            summary=f"drain {member.member}",
        )
        try:
            record: contract.DrainRecord = await asyncio.shield(annotating)
        except asyncio.CancelledError:
            # What it annotates must be known to be restored: wait for its record.
            self._drain = await annotating
            raise
        self._drain = record
        return record

    async def _restore_pair(
        self, member: MemberUpdateInput, drain: contract.DrainRecord
    ) -> Restored:
        """Put the annotations back (retrying up to the restore timeout), then wait for peers."""
        self._step = MemberStep.RESTORE
        request = contract.RestoreRequest(member=member, drain=drain)
        try:
            result = await workflow.execute_activity(
                contract.RESTORE_ANNOTATIONS,
                request,
                result_type=contract.RestoreResult,
                start_to_close_timeout=QUICK,
                schedule_to_close_timeout=member.timings.restore_timeout,
                retry_policy=RESTORE_UNTIL_TIMEOUT,
                summary=f"restore {member.member}",
            )
        except ActivityError as error:
            services = sorted(f"{c.namespace}/{c.name}" for c in drain.changes)
            return Restored(left_drained=services, problem=failure_text(error))
        notes = []
        if result.vanished:
            notes.append(f"vanished before the restore: {', '.join(result.vanished)}")
        try:
            await self._waiting_step(
                MemberStep.RESTORE,
                member,
                request,
                waits=member.timings.drain_timeout,
                summary=f"wait until peers route to {member.member} again",
                activity=contract.RESTORE_WAIT,
            )
        except ActivityError as error:
            return Restored(problem=failure_text(error), notes=notes)
        return Restored(notes=notes)

    def _outcome(
        self,
        member: MemberUpdateInput,
        failure: str | None,
        failed_step: MemberStep | None,
        restored: Restored | None,
    ) -> MemberUpdateResult:
        """The member's result: a restore that could not finish is said first and loudest."""
        notes = restored.notes if restored else []
        if restored is not None and restored.left_drained:
            earlier = (
                f"; before that, {failed_step.value if failed_step else 'a step'} failed: {failure}"
                if failure is not None
                else ""
            )
            self._step = None
            return MemberUpdateResult(
                outcome=MemberOutcome.FAILED,
                message=(
                    f"LEFT DRAINED: {member.member} still has service.cilium.io/shared: "
                    f'"false" on {", ".join(restored.left_drained)}: the restore failed: '
                    f"{restored.problem}{earlier}"
                ),
                step=MemberStep.RESTORE,
                left_drained=restored.left_drained,
            )
        if failure is not None:
            self._step = None
            message = f"{failed_step.value if failed_step else 'step'} failed: {failure}"
            if restored is not None:
                message += f"; restore: {restored.problem}" if restored.problem else "; restored"
            return MemberUpdateResult(
                outcome=MemberOutcome.FAILED,
                message="; ".join([message, *notes]),
                step=failed_step,
            )
        if restored is not None and restored.problem is not None:
            self._step = None
            return MemberUpdateResult(
                outcome=MemberOutcome.FAILED,
                message="; ".join(
                    [f"{MemberStep.RESTORE.value} failed: {restored.problem}", *notes]
                ),
                step=MemberStep.RESTORE,
            )
        return self._ended(MemberOutcome.COMPLETED, "; ".join(notes) or None, member.target)

    async def _steps_before_record_first(self, member: MemberUpdateInput) -> MemberUpdateResult:
        """The steps as histories from before ``drain-record-first`` recorded them."""
        drain: contract.DrainRecord | None = None
        failure: str | None = None
        failed_step: MemberStep | None = None
        # Later steps get only the member lists they read: each input is kept in history.
        step_input = member.for_step()
        hop_input = member.for_step(reads_members=False)
        timings = member.timings
        try:
            drain = await self._waiting_step(
                MemberStep.DRAIN,
                member,
                step_input,
                waits=timings.drain_timeout,
                summary=f"drain {member.member}",
                result_type=contract.DrainRecord,
            )
            if member.upgrade_type is not UpgradeType.NODE_IMAGE_ONLY:
                for index, hop in enumerate(member.hops):
                    request = contract.HopRequest(member=hop_input, hop=hop, hop_index=index)
                    await self._waiting_step(
                        MemberStep.CONTROL_PLANE,
                        member,
                        request,
                        waits=timings.control_plane_timeout,
                        summary=f"control plane {member.member} -> {hop.kubernetes_version}",
                        result_type=OperationProgress,
                    )
                    await self._waiting_step(
                        MemberStep.CILIUM,
                        member,
                        request,
                        waits=timings.cilium_timeout,
                        summary=f"cilium {member.member} -> {hop.cilium_version}",
                        result_type=OperationProgress,
                    )
            await self._waiting_step(
                MemberStep.VERIFY,
                member,
                contract.VerifyRequest(member=step_input, drain=drain),
                waits=member.mesh_ready_timeout,
                summary=f"verify {member.member}",
            )
        except ActivityError as error:
            failure, failed_step = failure_text(error), self._step
        finally:
            if drain is not None:
                # Shielded: even a cancelled member puts its services back.
                await asyncio.shield(asyncio.ensure_future(self._restore(step_input, drain)))
        if failure is not None:
            return MemberUpdateResult(
                outcome=MemberOutcome.FAILED,
                message=f"{failed_step.value if failed_step else 'step'} failed: {failure}",
                step=failed_step,
            )
        return self._ended(MemberOutcome.COMPLETED, None, member.target)

    async def _waiting_step(
        self,
        step: MemberStep,
        member: MemberUpdateInput,
        arg: object,
        *,
        waits: timedelta,
        summary: str,
        result_type: type[T] | None = None,
        activity: str | None = None,
    ) -> T:
        """One step that waits on the fleet: heartbeating, retried, up to ``waits``."""
        self._step = step
        result: T = await workflow.execute_activity(
            activity or _STEP_ACTIVITIES[step],
            arg,
            result_type=result_type,
            start_to_close_timeout=waits + MARGIN,
            heartbeat_timeout=member.timings.heartbeat_timeout,
            retry_policy=STEP_RETRY,
            summary=summary,
        )
        return result

    async def _restore(self, member: MemberUpdateInput, drain: contract.DrainRecord) -> None:
        self._step = MemberStep.RESTORE
        await workflow.execute_activity(
            contract.RESTORE,
            contract.RestoreRequest(member=member, drain=drain),
            start_to_close_timeout=member.timings.drain_timeout + MARGIN,
            heartbeat_timeout=member.timings.heartbeat_timeout,
            retry_policy=RESTORE_RETRY,
            summary=f"restore {member.member}",
        )

    def _ended(
        self,
        outcome: MemberOutcome,
        message: str | None,
        versions: VersionPair | None,
    ) -> MemberUpdateResult:
        step, self._step = self._step, None
        return MemberUpdateResult(outcome=outcome, message=message, step=step, versions=versions)
