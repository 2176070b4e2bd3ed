"""One member's update: preflight, drain, control plane, bundled Cilium, verify, restore.

Each step is an activity with its own timeout, retry policy and heartbeat;
once a drain has happened, the restore runs whatever happens after it (a
failed step, a cancelled workflow), so a member never stays drained.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from engine.domain import run as contract
from engine.domain.backend import OperationProgress
from engine.domain.plan import VersionPair
from engine.domain.run import (
    MemberOutcome,
    MemberStep,
    MemberUpdateInput,
    MemberUpdateResult,
    PreflightOutcome,
)
from engine.domain.runspec import UpgradeType
from workflows.failures import failure_reason

#: Transient errors (API briefly down, a conflict) are retried with backoff; the
#: activities mark errors a retry cannot fix as non-retryable.
STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)
#: Restore must get through: it keeps trying much longer.
RESTORE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=30,
)
QUICK_STEP = timedelta(minutes=2)
MARGIN = timedelta(minutes=1)
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
            start_to_close_timeout=QUICK_STEP,
            retry_policy=STEP_RETRY,
            summary=f"preflight {member.member}",
        )
        if preflight.outcome is PreflightOutcome.AT_TARGET:
            return self._ended(MemberOutcome.SKIPPED, preflight.message, preflight.current)
        if preflight.outcome is PreflightOutcome.DEFERRED:
            return self._ended(MemberOutcome.DEFERRED, preflight.message, preflight.current)
        if preflight.outcome is PreflightOutcome.REFUSED:
            return self._ended(MemberOutcome.FAILED, preflight.message, preflight.current)

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
            failure, failed_step = failure_reason(error), self._step
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
    ) -> T:
        """One step that waits on the fleet: heartbeating, retried, up to ``waits``."""
        self._step = step
        result: T = await workflow.execute_activity(
            _STEP_ACTIVITIES[step],
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
