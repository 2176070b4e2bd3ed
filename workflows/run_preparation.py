"""The update run's preparation: take the network, read its members, plan; give it back."""

from __future__ import annotations

import contextlib
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError

from engine.domain import run as contract
from engine.domain.errors import InvalidInputError
from engine.domain.failures import failure_text
from engine.domain.member import Member
from engine.domain.plan import Plan, VersionPair
from engine.domain.run import State
from engine.domain.runspec import UpgradeType
from engine.domain.strategy import UpdateStrategy
from engine.domain.versions import Version
from strategies import (
    parse_catalog,
    plan,
)
from strategies import run_machine as machine
from workflows.policies import BEST_EFFORT_RETRY, QUICK, RELEASE_RETRY, RUN_RETRY
from workflows.run_core import RunCore
from workflows.run_patches import (
    PATCH_PLAN_RECORDED,
    PATCH_REFUSE_EMPTY_NETWORK,
    PATCH_RELEASE_AFTER_FAILED_ACQUIRE,
)
from workflows.run_status import one_by_one_strategy, status_from_plan

T = TypeVar("T")


class RunPreparation(RunCore):
    """Takes and releases the network; reads the members and records the plan."""

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
        status.stages = status_from_plan(run_plan)
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
                retry_policy=RUN_RETRY,
                summary=summary,
            )
        except ActivityError as error:
            if not self._survives():
                raise
            self._fail_run(f"cannot {summary}: {failure_text(error)}")
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
                retry_policy=RUN_RETRY,
                summary="read the members again",
            )
            baseline = await workflow.execute_activity(
                contract.SERVICE_ENDPOINTS,
                contract.ServiceEndpointsRequest(members=self._state.network_members),
                result_type=contract.ServiceEndpointsResult,
                start_to_close_timeout=QUICK,
                retry_policy=RUN_RETRY,
                summary="record the global services' baseline again",
            )
        except ActivityError as error:
            self._fail_run(f"cannot read the network again: {failure_text(error)}")
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
                retry_policy=RUN_RETRY,
                summary=f"take network {self._input.spec.network}",
            )
        except ActivityError as error:
            self._fail_run(failure_text(error))
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
            retry_policy=RELEASE_RETRY,
            summary=f"release network {self._input.spec.network}",
        )
        self._state.holding_network = False
