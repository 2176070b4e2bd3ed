"""Failure paths: a run never dies of an activity error, and never strands its network."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from engine.domain import run as contract
from engine.domain.member import Member
from engine.domain.run import State
from tests.runs.harness import (
    Cluster,
    network_freed,
    network_holder,
    running_fleet,
    strategy,
    wait_until,
)

TWO = [Cluster("a-1", group="all"), Cluster("a-2", group="all")]
ONE_STAGE = strategy([{"name": "all", "groups": [{"name": "all", "maxConcurrency": "2"}]}])
ONE_BY_ONE = strategy([{"name": "all", "groups": [{"name": "all"}]}])


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
        assert await network_freed(fleet), "a failed run kept its network"
        assert not fleet.audit("controlPlaneUpgradeStarted")

        mesh.fixed = True
        await run.retry(reason="the API server is back")
        done = await run.result()
        assert done.state is State.COMPLETED, done.error
        assert len(fleet.audit("controlPlaneUpgradeStarted")) == 2
        assert await network_freed(fleet)


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
        assert await network_freed(fleet), "a failed preparation kept the network"
        description = await run._handle.describe()
        assert description.status is not None
        assert description.status.name == "RUNNING", "the run closed instead of lingering"


FAIL_CP = {"on": "controlPlaneUpgrade", "kind": "fail", "message": "quota exceeded"}
HANG_CP = {"on": "controlPlaneUpgrade", "kind": "hang"}


async def test_a_group_over_its_budget_stops_launches_in_its_sibling_groups(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """Budget 0, groups a (one failing member), b and c (three each, one at a time): once
    a-1 has failed, no control-plane upgrade starts in b or c; b-1 and c-1 finish."""
    clusters = [
        Cluster("a-1", group="a", faults=[FAIL_CP]),
        *(Cluster(f"b-{i}", group="b", faults=[HANG_CP] if i == 1 else []) for i in (1, 2, 3)),
        *(Cluster(f"c-{i}", group="c", faults=[HANG_CP] if i == 1 else []) for i in (1, 2, 3)),
    ]
    three_groups = strategy(
        [{"name": "all", "groups": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}]
    )
    async with running_fleet(client, task_queue, state_dir, clusters) as fleet:
        run = await fleet.start_run(three_groups)
        await wait_until(
            run,
            lambda s: (m := s.member("a-1")) is not None and m.state is State.FAILED,
            timeout=30,
        )
        # b-1 and c-1 hang in their upgrades until a-1's failure is known: now let them go.
        assert fleet.backend.clear_faults()
        failed = await wait_until(run, lambda s: s.state is State.FAILED, timeout=30)
        started = {e.cluster for e in fleet.audit("controlPlaneUpgradeStarted")}
        assert started <= {"a-1", "b-1", "c-1"}, f"launched after the budget was blown: {started}"
        for name in ("b-2", "b-3", "c-2", "c-3"):
            member = failed.member(name)
            assert member is not None
            assert member.state is State.NOT_STARTED, (name, member.state)
        assert await network_freed(fleet)


async def test_a_failed_stage_ends_the_run_without_waiting_for_a_parallel_stages_window(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """europe fails; americas (in parallel) waits for a window days away: the run ends Failed
    now, americas is not left Running or Pending, and nothing of it ever starts."""
    day = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).strftime("%A")
    window = {
        "schedule": {"weekly": {"intervalWeeks": 1, "dayOfWeek": day}},
        "durationHours": 4,
        "startTime": "00:00",
    }
    clusters = [
        Cluster("eu-1", group="europe", faults=[FAIL_CP]),
        Cluster("us-1", group="americas", window=window),
    ]
    two_branches = strategy(
        [
            {"name": "europe", "dependsOn": [], "groups": [{"name": "europe"}]},
            {"name": "americas", "dependsOn": [], "groups": [{"name": "americas"}]},
        ]
    )
    async with running_fleet(client, task_queue, state_dir, clusters) as fleet:
        run = await fleet.start_run(two_branches)
        failed = await wait_until(run, lambda s: s.state.finished, timeout=30)
        assert failed.state is State.FAILED
        europe, americas = failed.stages
        assert europe.state is State.FAILED
        assert americas.state not in (State.RUNNING, State.PENDING), americas.state
        assert all(g.state.finished for g in americas.groups), americas.groups
        assert {e.cluster for e in fleet.audit("controlPlaneUpgradeStarted")} == {"eu-1"}
        assert await network_freed(fleet)


async def test_two_runs_of_the_same_name_in_sequence_do_not_share_operation_records(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """The first ``nightly`` fails a-1's upgrade and is closed; the second ``nightly`` (same
    name, same target, same attempt number) upgrades a-1 afresh instead of finding the
    first run's failed operation under the same key."""
    clusters = [Cluster("a-1", group="all", faults=[FAIL_CP])]
    document = strategy([{"name": "all", "groups": [{"name": "all"}]}])
    async with running_fleet(client, task_queue, state_dir, clusters) as fleet:
        first = await fleet.start_run(document, name="nightly")
        assert (await first.result()).state is State.FAILED
        await first._handle.terminate(reason="closed to reuse its name")

        second = await fleet.start_run(document, name="nightly")
        done = await second.result()
        assert done.state is State.COMPLETED, done.error
        assert len(fleet.audit("controlPlaneUpgradeStarted")) == 2


async def test_a_resume_after_a_member_left_the_network_skips_it_with_a_reason(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """Four members one at a time; stop after the first; remove d-3 (it runs once the
    network is free); resume: d-3 is Skipped with a reason and never touched."""
    from engine.domain.network import UPDATE_REMOVE, OperationResult
    from engine.domain.network import network_workflow_id as network_id
    from engine.domain.network_requests import RemoveRequest

    clusters = [Cluster(f"d-{i}", group="all") for i in range(1, 5)]
    async with running_fleet(client, task_queue, state_dir, clusters) as fleet:
        run = await fleet.start_run(ONE_BY_ONE)
        await wait_until(run, lambda s: any(m.state is State.RUNNING for _, _, m in s.members()))
        await run.stop("membership change", identity="oncall@example")
        stopped = await run.result()
        assert stopped.state is State.STOPPED
        assert await network_freed(fleet)
        network = client.get_workflow_handle(network_id(fleet.network))
        await network.execute_update(
            UPDATE_REMOVE, RemoveRequest(members=["d-3"]), result_type=OperationResult
        )

        await run.resume(reason="membership settled")
        done = await run.result()
        assert done.state is State.COMPLETED, done.error
        removed = done.member("d-3")
        assert removed is not None
        assert removed.state is State.SKIPPED
        assert "left the network" in (removed.message or "")
        touched = {e.cluster for e in fleet.audit() if e.event.value.startswith("controlPlane")}
        assert "d-3" not in touched
        assert {e.cluster for e in fleet.audit("controlPlaneUpgradeStarted")} == {
            "d-1",
            "d-2",
            "d-4",
        }


async def test_a_cancelled_run_gives_its_network_back(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    from engine.domain.fleet import Fault, FaultKind, FaultTrigger

    async with running_fleet(client, task_queue, state_dir, TWO) as fleet:
        hang = fleet.backend.add_fault(
            "a-1", Fault(kind=FaultKind.HANG, on=FaultTrigger.CONTROL_PLANE_UPGRADE)
        )
        run = await fleet.start_run(ONE_BY_ONE)
        await wait_until(run, lambda s: bool(fleet.audit("controlPlaneUpgradeStarted")))
        assert await network_holder(fleet) is not None
        await run._handle.cancel()
        fleet.backend.clear_faults(fault_id=hang.id)
        assert await network_freed(fleet), "a cancelled run kept its network"


class MeshReadBreaksOnce:
    """``check_mesh_health``: healthy, except that call number ``broken_call`` fails."""

    def __init__(self, broken_call: int) -> None:
        self.broken_call = broken_call
        self.calls = 0

    @activity.defn(name=contract.CHECK_MESH_HEALTH)
    async def check_mesh_health(
        self, request: contract.MeshHealthRequest
    ) -> contract.MeshHealthResult:
        self.calls += 1
        if self.calls == self.broken_call:
            raise ApplicationError("the API server said no", non_retryable=True)
        return contract.MeshHealthResult(healthy=True)


async def test_a_stage_retried_after_its_after_gate_broke_checks_the_mesh_before_it_again(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    mesh = MeshReadBreaksOnce(broken_call=2)  # 1: before the stage, 2: after it
    async with running_fleet(
        client, task_queue, state_dir, TWO, replaced=[mesh.check_mesh_health]
    ) as fleet:
        run = await fleet.start_run(ONE_STAGE)
        failed = await wait_until(run, lambda s: s.state is State.FAILED, timeout=30)
        assert "mesh health after the stage could not be checked" in (failed.error or "")
        await run.retry(reason="the API server is back")
        done = await run.result()
        assert done.state is State.COMPLETED, done.error
        assert mesh.calls == 4, "the retried stage skipped its health gate before the groups"


class AcquireGrantedThenLost:
    """``acquire_network`` whose answer never reaches the run: the network grants the hold,
    then the activity fails (as a timeout after the grant would)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    @activity.defn(name=contract.ACQUIRE_NETWORK)
    async def acquire_network(self, lease: contract.NetworkLease) -> contract.LeasedNetwork:
        from engine.domain.network import UPDATE_ACQUIRE, NetworkDescription
        from engine.domain.network import network_workflow_id as network_id
        from engine.domain.network_requests import AcquireRequest

        handle = self.client.get_workflow_handle(network_id(lease.network))
        await handle.execute_update(
            UPDATE_ACQUIRE, AcquireRequest(run_id=lease.run_id), result_type=NetworkDescription
        )
        raise ApplicationError("the answer was lost on the way back", non_retryable=True)


async def test_an_acquire_that_fails_after_the_network_granted_it_gives_the_network_back(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    lost = AcquireGrantedThenLost(client)
    async with running_fleet(
        client, task_queue, state_dir, TWO, replaced=[lost.acquire_network]
    ) as fleet:
        run = await fleet.start_run(ONE_STAGE)
        failed = await wait_until(run, lambda s: s.state is State.FAILED, timeout=30)
        assert "lost on the way back" in (failed.error or "")
        assert await network_freed(fleet), "a hold granted after the run gave up was kept"
        assert not fleet.audit("controlPlaneUpgradeStarted")
