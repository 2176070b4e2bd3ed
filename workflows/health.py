"""The health-check workflow: one activity, its report returned."""

from __future__ import annotations

from temporalio import workflow

from engine.domain.health import (
    HEALTH_CHECK_ACTIVITY,
    HEALTH_CHECK_WORKFLOW,
    HealthCheckInput,
    HealthReport,
)
from workflows.policies import QUICK_READ


@workflow.defn(name=HEALTH_CHECK_WORKFLOW)
class HealthCheckWorkflow:
    """Runs the health-check activity once and returns what the worker reported."""

    @workflow.run
    async def run(self, request: HealthCheckInput) -> HealthReport:
        report: HealthReport = await workflow.execute_activity(
            HEALTH_CHECK_ACTIVITY,
            request,
            result_type=HealthReport,
            start_to_close_timeout=QUICK_READ,
            summary="health check",
        )
        return report
