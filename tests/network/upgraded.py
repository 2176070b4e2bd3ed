"""The workflow code of a later meshfleet build, for the upgrade-under-load test.

Each class is today's workflow under its own name with one change that issues
a new command (a short timer), guarded by ``workflow.patched`` as the policy
requires: histories begun on the earlier build replay down the old branch,
work begun on this build takes the new one. Kept in a module of its own so
the workflow sandbox imports nothing else.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from engine.domain.network import NETWORK_WORKFLOW, NetworkDescription, NetworkInput
from engine.domain.run import MEMBER_UPDATE_WORKFLOW, MemberUpdateInput, MemberUpdateResult
from workflows.member_update import MemberUpdateWorkflow
from workflows.network import NetworkWorkflow

#: The patch id of the change these builds ship.
PATCH = "test-upgrade-under-load"
#: The new command's length (a timer the earlier build never started).
PAUSE = timedelta(milliseconds=10)


@workflow.defn(name=MEMBER_UPDATE_WORKFLOW)
class UpgradedMemberUpdateWorkflow(MemberUpdateWorkflow):
    """A member update that pauses before its first step when started on the new build."""

    @workflow.run
    async def run(self, member: MemberUpdateInput) -> MemberUpdateResult:
        """Today's member update, after the patched pause."""
        if workflow.patched(PATCH):
            await workflow.sleep(PAUSE)
        return await super().run(member)


@workflow.defn(name=NETWORK_WORKFLOW)
class UpgradedNetworkWorkflow(NetworkWorkflow):
    """A network that pauses before each operation it runs on the new build."""

    @workflow.init
    def __init__(self, request: NetworkInput) -> None:
        super().__init__(request)

    @workflow.run
    async def run(self, request: NetworkInput) -> NetworkDescription:
        """Today's network loop."""
        return await super().run(request)

    async def _run_next(self) -> None:
        if self._runnable() and workflow.patched(PATCH):
            await workflow.sleep(PAUSE)
        await super()._run_next()
