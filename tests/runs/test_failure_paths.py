"""Failure paths: a run never dies of an activity error, and never strands its network."""

from __future__ import annotations

from pathlib import Path

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from engine.domain import run as contract
from engine.domain.member import Member
from engine.domain.run import State
from tests.runs.harness import Cluster, network_holder, running_fleet, strategy, wait_until

TWO = [Cluster("a-1", group="all"), Cluster("a-2", group="all")]
ONE_STAGE = strategy([{"name": "all", "groups": [{"name": "all", "maxConcurrency": "2"}]}])


class BrokenMeshReads:
    """``check_mesh_health`` that fails (for good, no retry) until ``fixed``."""

    def __init__(self) -> None:
        self.fixed = False
        self.calls = 0

    @activity.defn(name=contract.CHECK_MESH_HEALTH)
    async def check_mesh_health(
        self, request: contract.MeshHealthRequest
    ) -> contract.MeshHealthResult:
        self.calls += 1
        if not self.fixed:
            raise ApplicationError("the API server said no", non_retryable=True)
        return contract.MeshHealthResult(healthy=True)


@activity.defn(name=contract.DESCRIBE_MEMBERS)
async def broken_describe_members(request: contract.DescribeMembersRequest) -> list[Member]:
    raise ApplicationError("cannot read the members: connection refused", non_retryable=True)


async def test_a_run_whose_gate_activity_keeps_failing_stays_open_and_retry_continues_it(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    mesh = BrokenMeshReads()
    async with running_fleet(
        client, task_queue, state_dir, TWO, replaced=[mesh.check_mesh_health]
    ) as fleet:
        run = await fleet.start_run(ONE_STAGE)
        failed = await wait_until(run, lambda s: s.state is State.FAILED, timeout=30)
        assert failed.error is not None
        assert "the API server said no" in failed.error
        assert failed.stages[0].state is State.FAILED
        assert "the API server said no" in (failed.stages[0].message or "")
        assert await network_holder(fleet) is None, "a failed run kept its network"
        assert not fleet.audit("controlPlaneUpgradeStarted")

        mesh.fixed = True
        await run.retry(reason="the API server is back")
        done = await run.result()
        assert done.state is State.COMPLETED, done.error
        assert len(fleet.audit("controlPlaneUpgradeStarted")) == 2
        assert await network_holder(fleet) is None


async def test_a_run_whose_preparation_fails_stays_open_and_leaves_the_network_free(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    async with running_fleet(
        client, task_queue, state_dir, TWO, replaced=[broken_describe_members]
    ) as fleet:
        run = await fleet.start_run(ONE_STAGE)
        failed = await wait_until(run, lambda s: s.state is State.FAILED, timeout=30)
        assert failed.error is not None
        assert "connection refused" in failed.error
        assert await network_holder(fleet) is None, "a failed preparation kept the network"
        description = await run._handle.describe()
        assert description.status is not None
        assert description.status.name == "RUNNING", "the run closed instead of lingering"
