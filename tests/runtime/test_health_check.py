"""The plumbing end to end: client -> server -> worker -> activity -> result."""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio import workflow
from temporalio.client import Client
from temporalio.testing import TimeSkipper

from engine.domain.health import HEALTH_CHECK_WORKFLOW, HealthCheckInput, HealthReport
from engine.runtime.worker import build_worker


async def test_health_check_workflow_runs_on_the_embedded_server(
    client: Client, task_queue: str
) -> None:
    """The health check's activity runs on our worker and its report comes back typed."""
    async with build_worker(client, task_queue):
        report = await client.execute_workflow(
            HEALTH_CHECK_WORKFLOW,
            HealthCheckInput(message="hello mesh"),
            id=f"healthcheck/{uuid.uuid4().hex}",
            task_queue=task_queue,
            result_type=HealthReport,
        )
    assert isinstance(report, HealthReport)
    assert report.message == "hello mesh"
    assert report.task_queue == task_queue
    assert report.activity_attempt == 1


@workflow.defn(sandboxed=False)
class FiveHourNap:
    """Sleeps five hours of workflow time."""

    @workflow.run
    async def run(self) -> float:
        start = workflow.now()
        await workflow.sleep(timedelta(hours=5))
        return (workflow.now() - start).total_seconds()


async def test_five_hour_sleep_finishes_in_seconds_with_time_skipping(
    time_skipping: TimeSkipper, task_queue: str
) -> None:
    """With the time-skipping fixture, five hours of workflow time pass without waiting.

    (Waiting for real would overrun the test timeout by hours.)
    """
    ts_client = time_skipping.client
    async with build_worker(ts_client, task_queue, workflows=[FiveHourNap], activities=[]):
        slept = await ts_client.execute_workflow(
            FiveHourNap.run, id=f"nap/{uuid.uuid4().hex}", task_queue=task_queue
        )
    assert slept >= 5 * 3600
