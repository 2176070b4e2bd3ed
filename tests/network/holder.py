"""A stand-in update run for lease tests: takes a network and then ends as it is told.

It takes the network through the real acquire activity (so the request names
its execution, as an update run's does) and then completes, fails, or waits
for ever (to be terminated, cancelled or timed out by the test). Kept in its
own small module so the workflow sandbox imports nothing else.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from engine.domain import run as contract

END_SIGNAL = "end"


@workflow.defn(name="LeaseHolder")
class LeaseHolderWorkflow:
    """Holds ``network`` as update run ``run_id`` until told how to end."""

    def __init__(self) -> None:
        self.how: str | None = None

    @workflow.run
    async def run(self, network: str, run_id: str) -> str:
        """Acquire, then end as the ``end`` signal says (``complete`` or ``fail``)."""
        await workflow.execute_activity(
            contract.ACQUIRE_NETWORK,
            contract.NetworkLease(network=network, run_id=run_id),
            result_type=contract.LeasedNetwork,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )
        await workflow.wait_condition(lambda: self.how is not None)
        if self.how == "fail":
            raise ApplicationError("the holder failed", non_retryable=True)
        return "completed without releasing"

    @workflow.signal(name=END_SIGNAL)
    def end(self, how: str) -> None:
        """End now: ``complete`` (without releasing) or ``fail``."""
        self.how = how
