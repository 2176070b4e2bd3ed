"""A network's watch on the run holding it, when the worker running the watch shuts down."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.testing import ActivityEnvironment

from activities.network import HolderActivities
from engine.domain.network import HolderExecution
from engine.domain.network_activities import WatchHolderInput


async def test_a_watch_given_back_at_worker_shutdown_fails_benign_so_it_is_retried_unlogged(
    client: Client, task_queue: str
) -> None:
    """Benign failures are logged by the SDK at debug level, without a traceback: a
    worker shutting down under live networks is no error to report once per network."""
    # A holder that runs until the test ends it: no worker polls its task queue.
    holder = await client.start_workflow(
        "NoWorkerPolls", id=f"holder-{uuid.uuid4()}", task_queue=task_queue
    )
    environment = ActivityEnvironment()
    # The watch is waiting once it heartbeats (the holder cannot end): shut down then.
    environment.on_heartbeat = lambda *_: environment.worker_shutdown()
    request = WatchHolderInput(
        holder=HolderExecution(workflow_id=holder.id, run_id=holder.result_run_id),
        period=dt.timedelta(hours=1),
    )
    try:
        with pytest.raises(ApplicationError) as raised:
            await environment.run(HolderActivities(client).watch_holder, request)
    finally:
        await holder.terminate("the test is over")
    assert raised.value.category is ApplicationErrorCategory.BENIGN
    assert raised.value.message == "the worker is shutting down; the watch goes on elsewhere"
    assert not raised.value.non_retryable
