"""A mesh-health read held open by the test, then broken: a gate read in flight on cue."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.exceptions import ApplicationError

from engine.domain import run as contract
from tests.runs.harness import Cluster, strategy

CHAIN_CLUSTERS = [Cluster("f-1", group="first"), Cluster("s-1", group="second")]
CHAIN = strategy(
    [
        {"name": "first", "groups": [{"name": "first"}]},
        {"name": "second", "groups": [{"name": "second"}]},
    ]
)


class MeshReadHeldThenBroken:
    """``check_mesh_health``: healthy, except call ``held_call``, which waits until
    ``release`` is set and then fails for good (the API server said no)."""

    def __init__(self, held_call: int) -> None:
        self.held_call = held_call
        self.calls = 0
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    @activity.defn(name=contract.CHECK_MESH_HEALTH)
    async def check_mesh_health(
        self, request: contract.MeshHealthRequest
    ) -> contract.MeshHealthResult:
        self.calls += 1
        if self.calls != self.held_call:
            return contract.MeshHealthResult(healthy=True)
        self.entered.set()
        while not self.release.is_set():
            activity.heartbeat()
            try:
                await asyncio.wait_for(self.release.wait(), timeout=0.5)
            except TimeoutError:
                continue
        raise ApplicationError("the API server said no", non_retryable=True)
