"""The built-in checks after a stage: the mesh and the endpoints, asked at once.

Since ``run-after-checks-together`` the run schedules both in one workflow task,
so the next stage starts one round trip sooner and, on real clusters, the
endpoints' wait no longer starts only once the mesh's has ended. Both still
have to pass. Runs recorded before the patch replay one after the other
(``tests/histories/UpdateRun``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from engine.domain import run as contract
from engine.domain.mesh import NotReadyLink
from engine.domain.run import RunStatus, State
from tests.runs.harness import Cluster, running_fleet, strategy, wait_until

TWO = [Cluster("a-1", group="all"), Cluster("a-2", group="all")]
ONE_STAGE = strategy([{"name": "all", "groups": [{"name": "all", "maxConcurrency": "2"}]}])


class MeetingChecks:
    """The checks after the stage each wait until the other one has started: both can
    only answer if the run asked for both before either answered."""

    def __init__(self) -> None:
        self.mesh_calls = 0
        self.mesh_started = asyncio.Event()
        self.endpoints_started = asyncio.Event()

    async def _meet(self, mine: asyncio.Event, other: asyncio.Event, name: str) -> None:
        mine.set()
        try:
            await asyncio.wait_for(other.wait(), timeout=20)
        except TimeoutError:
            raise ApplicationError(
                f"the {name} check was asked alone", non_retryable=True
            ) from None

    @activity.defn(name=contract.CHECK_MESH_HEALTH)
    async def check_mesh_health(
        self, request: contract.MeshHealthRequest
    ) -> contract.MeshHealthResult:
        self.mesh_calls += 1
        if self.mesh_calls >= 2:  # 1: before the stage, 2: after it
            await self._meet(self.mesh_started, self.endpoints_started, "mesh")
        return contract.MeshHealthResult(healthy=True)

    @activity.defn(name=contract.SERVICE_ENDPOINTS)
    async def service_endpoints(
        self, request: contract.ServiceEndpointsRequest
    ) -> contract.ServiceEndpointsResult:
        if request.baseline is not None:  # the baseline itself is read before the stages
            await self._meet(self.endpoints_started, self.mesh_started, "endpoints")
        return contract.ServiceEndpointsResult(ready={})


class BothChecksFail:
    """After the stage, the mesh has a link down and a service is below its baseline."""

    def __init__(self) -> None:
        self.mesh_calls = 0
        self.endpoints_asked = False

    @activity.defn(name=contract.CHECK_MESH_HEALTH)
    async def check_mesh_health(
        self, request: contract.MeshHealthRequest
    ) -> contract.MeshHealthResult:
        self.mesh_calls += 1
        if self.mesh_calls < 2:
            return contract.MeshHealthResult(healthy=True)
        link = NotReadyLink(viewer="a-1", peer="a-2", reason="etcd: 0/1 connected")
        return contract.MeshHealthResult(healthy=False, not_ready=[link])

    @activity.defn(name=contract.SERVICE_ENDPOINTS)
    async def service_endpoints(
        self, request: contract.ServiceEndpointsRequest
    ) -> contract.ServiceEndpointsResult:
        if request.baseline is None:
            return contract.ServiceEndpointsResult(ready={"shop/checkout": 2})
        self.endpoints_asked = True
        return contract.ServiceEndpointsResult(
            ready={"shop/checkout": 1}, below_baseline=["shop/checkout"]
        )


async def _one_stage_ended(
    client: Client, task_queue: str, state_dir: Path, checks: MeetingChecks | BothChecksFail
) -> RunStatus:
    """A one-stage run of two members with ``checks`` in place of the real ones, once ended."""
    async with running_fleet(
        client,
        task_queue,
        state_dir,
        TWO,
        replaced=[checks.check_mesh_health, checks.service_endpoints],
    ) as fleet:
        run = await fleet.start_run(ONE_STAGE)
        return await wait_until(run, lambda s: s.state.finished, timeout=60)


async def test_the_mesh_and_endpoints_checks_after_a_stage_are_asked_at_once(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    checks = MeetingChecks()
    done = await _one_stage_ended(client, task_queue, state_dir, checks)
    assert done.state is State.COMPLETED, done.error
    assert checks.mesh_started.is_set()
    assert checks.endpoints_started.is_set()


async def test_when_both_checks_after_a_stage_fail_the_stage_names_the_mesh(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    checks = BothChecksFail()
    failed = await _one_stage_ended(client, task_queue, state_dir, checks)
    assert failed.state is State.FAILED
    message = failed.stages[0].message or ""
    assert message == "mesh not healthy after the stage: a-1 -> a-2: etcd: 0/1 connected"
    assert "mesh not healthy after the stage" in (failed.error or "")
    assert checks.endpoints_asked, "the endpoints were not checked alongside the mesh"
