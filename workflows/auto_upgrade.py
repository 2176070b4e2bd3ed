"""The auto-upgrade workflow: what one firing (or manual trigger) of a profile's schedule does.

It reads the network's members and the release catalog (an activity),
resolves the profile's channel with the pure ``strategies.resolve_channel``,
and, when some member is behind, creates the update run through an activity
under a name derived from the profile and the target, so a second trigger
finds the same run instead of starting a duplicate. It never fails: every
outcome, errors included, is its result (``TriggerResult``), which Temporal
keeps and ``schedule show`` reads as the profile's status.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from engine.domain.schedule import (
    AUTO_UPGRADE_WORKFLOW,
    READ_AUTO_UPGRADE_FACTS,
    START_AUTO_UPGRADE_RUN,
    AutoUpgradeFacts,
    AutoUpgradeInput,
    AutoUpgradeRunRef,
    StartAutoUpgradeRun,
    TriggerResult,
    TriggerStatus,
    auto_run_name,
)
from strategies import ChannelError, parse_catalog, resolve_channel
from workflows.failures import failure_reason

#: Reads and the run's creation are short; retry transient failures a few times.
RETRY = RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(seconds=10))
QUICK = timedelta(minutes=2)


@workflow.defn(name=AUTO_UPGRADE_WORKFLOW)
class AutoUpgradeWorkflow:
    """One trigger of one auto-upgrade profile (id ``autoupgrade/<profile>/trigger-<time>``)."""

    @workflow.run
    async def run(self, request: AutoUpgradeInput) -> TriggerResult:
        profile = request.profile
        result = TriggerResult(
            profile=profile.name,
            network=profile.network,
            triggered_at=workflow.now(),
            status=TriggerStatus.FAILED,
        )
        try:
            facts = await workflow.execute_activity(
                READ_AUTO_UPGRADE_FACTS,
                profile,
                result_type=AutoUpgradeFacts,
                start_to_close_timeout=QUICK,
                retry_policy=RETRY,
                summary=f"read network {profile.network}'s members",
            )
        except ActivityError as error:
            result.error = f"cannot read network {profile.network!r}: {failure_reason(error)}"
            return result
        try:
            resolution = resolve_channel(
                profile.channel,
                facts.members,
                parse_catalog(facts.catalog),
                profile.target_kubernetes_version,
            )
        except ChannelError as error:
            result.members = facts.members
            result.error = f"channel {profile.channel.value}: {error}"
            return result
        result.members = resolution.members
        result.message = resolution.message
        if resolution.target is None:
            result.status = TriggerStatus.NOTHING_TO_DO
            return result
        target = str(resolution.target)
        result.upgrade_versions = resolution.upgrade_versions
        try:
            result.run = await workflow.execute_activity(
                START_AUTO_UPGRADE_RUN,
                StartAutoUpgradeRun(
                    profile=profile, target=target, run=auto_run_name(profile.name, target)
                ),
                result_type=AutoUpgradeRunRef,
                start_to_close_timeout=QUICK,
                retry_policy=RETRY,
                summary=f"create the update run to Kubernetes {target}",
            )
        except ActivityError as error:
            result.error = f"cannot create the update run: {failure_reason(error)}"
            return result
        result.status = TriggerStatus.SUCCEEDED
        return result
