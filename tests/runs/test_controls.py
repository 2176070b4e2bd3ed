"""Controls and gates: stop, resume, approve, skip, retry — and what they refuse."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import TimeSkipper

from engine.domain.fleet import Fault, FaultKind, FaultTrigger
from engine.domain.run import GateState, RunStatus, SkipTargetType, State
from engine.runtime.runs import ControlRejectedError, UpdateRunHandle
from tests.polling import eventually
from tests.runs.harness import Cluster, running_fleet, strategy, wait_until

FOUR = [Cluster(f"node-{i}", group="all") for i in range(1, 5)]


async def update_events(handle: UpdateRunHandle) -> int:
    history = await handle._handle.fetch_history()
    return sum(1 for e in history.events if "UPDATE" in EventType.Name(e.event_type))


async def test_stop_lets_the_member_in_flight_finish_and_resume_completes_the_run(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """The first upgrade hangs until the stop has been taken: the stop always lands while
    exactly one member is in flight."""
    hang = Fault(kind=FaultKind.HANG, on=FaultTrigger.CONTROL_PLANE_UPGRADE)
    async with running_fleet(client, task_queue, state_dir, FOUR) as fleet:
        hangs = [fleet.backend.add_fault(c.name, hang) for c in FOUR]
        run = await fleet.start_run(strategy([{"name": "all", "groups": [{"name": "all"}]}]))
        await eventually(
            lambda: fleet.audit("controlPlaneUpgradeStarted"), what="the first upgrade to start"
        )
        stopping = await run.stop("change freeze", identity="oncall@example")
        # The moment of the stop: one member in flight, its upgrade held, the rest waiting.
        assert stopping.state is State.STOPPING
        states = [m.state for _, _, m in stopping.members()]
        assert states.count(State.RUNNING) == 1, states
        assert states.count(State.NOT_STARTED) == 3, states
        for fault in hangs:
            fleet.backend.clear_faults(fault_id=fault.id)
        stopped = await run.result()
        assert stopped.state is State.STOPPED
        states = [m.state for _, _, m in stopped.members()]
        assert states.count(State.COMPLETED) == 1, states
        assert states.count(State.NOT_STARTED) == 3, states
        assert len(fleet.audit("controlPlaneUpgradeStarted")) == 1
        record = stopped.controls[-1]
        assert (record.action.value, record.identity, record.reason) == (
            "stop",
            "oncall@example",
            "change freeze",
        )

        await run.resume(reason="freeze over")
        done = await run.result()
        assert done.state is State.COMPLETED
        assert all(m.state is State.COMPLETED for _, _, m in done.members())
        assert len(fleet.audit("controlPlaneUpgradeStarted")) == 4


async def test_an_approval_gate_blocks_until_approved(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    gated = strategy(
        [
            {
                "name": "all",
                "beforeGates": [{"type": "Approval", "displayName": "change board"}],
                "groups": [{"name": "all", "maxConcurrency": "4"}],
            }
        ]
    )
    async with running_fleet(client, task_queue, state_dir, FOUR) as fleet:
        run = await fleet.start_run(gated)
        waiting = await wait_until(
            run, lambda s: any(g.state is GateState.PENDING for g in s.gates())
        )
        assert not fleet.audit("controlPlaneUpgradeStarted"), (
            "a member started behind a closed gate"
        )
        assert waiting.stages[0].state is State.PENDING
        gate = waiting.gates()[0]
        assert gate.id == "all/before/0"

        approving = dt.datetime.now(dt.UTC)
        await run.approve("change board", comment="CAB-1234")
        done = await run.result()
        assert done.state is State.COMPLETED
        started = fleet.audit("controlPlaneUpgradeStarted")
        assert len(started) == 4
        assert all(e.at >= approving for e in started), "a member started behind a closed gate"
        approved = done.gates()[0]
        assert approved.state is GateState.COMPLETED
        assert approved.comment == "CAB-1234"


async def test_bad_controls_are_rejected_clearly_and_leave_no_trace(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    gated = strategy(
        [
            {"name": "first", "groups": [{"name": "first", "members": ["node-1"]}]},
            {
                "name": "rest",
                "beforeGates": [{"type": "Approval"}],
                "groups": [{"name": "rest", "members": ["node-2", "node-3", "node-4"]}],
            },
        ]
    )
    async with running_fleet(client, task_queue, state_dir, FOUR) as fleet:
        run = await fleet.start_run(gated)
        await wait_until(run, lambda s: any(g.state is GateState.PENDING for g in s.gates()))
        before = await update_events(run)

        with pytest.raises(ControlRejectedError, match="no gate 'nonsense'"):
            await run.approve("nonsense")
        with pytest.raises(ControlRejectedError, match="node-1 is Completed"):
            await run.skip([(SkipTargetType.MEMBER, "node-1")])
        with pytest.raises(
            ControlRejectedError, match="only a Stopped or Failed run can be resumed"
        ):
            await run.resume()
        with pytest.raises(ControlRejectedError, match="retry once it has finished"):
            await run.retry()
        with pytest.raises(ControlRejectedError, match="no member 'ghost'"):
            await run.skip([(SkipTargetType.MEMBER, "ghost")])

        assert await update_events(run) == before, "a rejected control reached the history"
        await run.skip([(SkipTargetType.MEMBER, "node-4")], reason="decommissioning")
        await run.approve("rest/before/0")
        done = await run.result()
        assert done.state is State.COMPLETED
        skipped = done.member("node-4")
        assert skipped is not None
        assert skipped.state is State.SKIPPED
        assert len(fleet.audit("controlPlaneUpgradeStarted")) == 3


async def test_a_scheduled_start_gate_and_a_soak_are_crossed_with_time_skipping(
    client: Client, time_skipping: TimeSkipper, task_queue: str, state_dir: Path
) -> None:
    """A gate days away and a two-hour soak take seconds of wall time on the virtual clock."""
    scheduled = strategy(
        [
            {
                "name": "weekend",
                "beforeGates": [
                    {
                        "type": "ScheduledStart",
                        "displayName": "saturday",
                        "startDay": "Saturday",
                        "startTime": "02:00",
                        "utcOffset": "+00:00",
                    }
                ],
                "afterStageWait": "2h",
                "groups": [{"name": "all", "maxConcurrency": "4"}],
            }
        ],
        soakCheckInterval="20m",
    )
    async with running_fleet(client, task_queue, state_dir, FOUR) as fleet:
        run = await fleet.start_run(scheduled, via=time_skipping.client)
        done = await run.result()
        assert done.state is State.COMPLETED, done.error
        gate = done.gates()[0]
        assert gate.completed_by == "schedule"
        assert gate.opens_at is not None
        assert gate.opens_at.weekday() == 5  # Saturday
        assert (gate.opens_at.hour, gate.opens_at.minute) == (2, 0)
        soak = done.stages[0].after_stage_wait
        assert soak is not None
        assert soak.state is State.COMPLETED
        assert soak.checks >= 5  # 2 h watched every 20 min
        assert done.start_time is not None
        assert done.completed_time is not None
        assert done.completed_time - done.start_time >= dt.timedelta(hours=2)


async def test_no_member_starts_while_the_fleet_window_is_closed(
    client: Client, time_skipping: TimeSkipper, task_queue: str, state_dir: Path
) -> None:
    """A run carrying a closed fleet window waits, Pending, and starts members at the opening."""
    from engine.domain.schedule import FleetWindow
    from strategies import fleet_window_next_opening

    now = dt.datetime.now(dt.UTC)
    # Open for one hour, starting in about two days: closed now, whatever the time of day.
    opening_day = (now + dt.timedelta(days=2)).date()
    window = FleetWindow.model_validate(
        {
            "days": [opening_day.strftime("%A")],
            "startTime": "03:00",
            "timeZone": "UTC",
            "durationHours": 1,
        }
    )
    expected = fleet_window_next_opening(window, now)
    assert expected is not None
    async with running_fleet(client, task_queue, state_dir, FOUR[:2]) as fleet:
        run = await fleet.start_run(
            strategy([{"name": "all", "groups": [{"name": "all"}]}]),
            via=time_skipping.client,
            fleet_window=window,
        )
        done = await run.result()
        assert done.state is State.COMPLETED, done.error
        for _, _, member in done.members():
            assert member.start_time is not None
            assert member.start_time >= expected, f"{member.name} started before the window"
            assert member.start_time < expected + dt.timedelta(hours=1)


async def test_starting_a_run_under_a_name_already_taken_is_refused_as_invalid_input(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    from engine.domain.errors import InvalidInputError

    async with running_fleet(client, task_queue, state_dir, FOUR[:1]) as fleet:
        document = strategy([{"name": "all", "groups": [{"name": "all"}]}])
        first = await fleet.start_run(document, name="nightly")
        with pytest.raises(
            InvalidInputError, match=f"a run {fleet.network}/nightly already exists"
        ):
            await fleet.start_run(document, name="nightly")
        assert (await first.result()).state is State.COMPLETED


async def test_skipping_a_stage_waiting_at_its_approval_gate_ends_it_skipped_and_refuses_approval(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    three = strategy(
        [
            {"name": "first", "groups": [{"name": "first", "members": ["node-1"]}]},
            {
                "name": "gated",
                "beforeGates": [{"type": "Approval"}],
                "groups": [{"name": "gated", "members": ["node-2"]}],
            },
            {"name": "last", "groups": [{"name": "last", "members": ["node-3"]}]},
        ]
    )
    async with running_fleet(client, task_queue, state_dir, FOUR[:3]) as fleet:
        run = await fleet.start_run(three)
        await wait_until(run, lambda s: any(g.state is GateState.PENDING for g in s.gates()))
        await run.skip([(SkipTargetType.STAGE, "gated")], reason="not this time")
        with pytest.raises(ControlRejectedError, match="gated/before/0 is Skipped"):
            await run.approve("gated/before/0")
        done = await run.result()
        assert done.state is State.COMPLETED, done.error
        states = {s.name: s.state for s in done.stages}
        assert states == {
            "first": State.COMPLETED,
            "gated": State.SKIPPED,
            "last": State.COMPLETED,
        }
        assert done.gates()[0].state is GateState.SKIPPED
        started = {e.cluster for e in fleet.audit("controlPlaneUpgradeStarted")}
        assert started == {"node-1", "node-3"}


async def test_a_resume_while_stopping_carries_on_instead_of_ending_failed(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """Group b halts (nothing in flight) while a-1 still runs; a resume then must restart b
    too, and the run completes."""
    from engine.domain.fleet import Fault, FaultKind, FaultTrigger

    hang = Fault(kind=FaultKind.HANG, on=FaultTrigger.CONTROL_PLANE_UPGRADE)
    clusters = [Cluster(n, group=n[0]) for n in ("a-1", "a-2", "b-1", "b-2")]
    two_groups = strategy([{"name": "all", "groups": [{"name": "a"}, {"name": "b"}]}])
    async with running_fleet(client, task_queue, state_dir, clusters) as fleet:
        a_hang = fleet.backend.add_fault("a-1", hang)
        b_hang = fleet.backend.add_fault("b-1", hang)
        run = await fleet.start_run(two_groups)
        await wait_until(
            run, lambda s: len(fleet.audit("controlPlaneUpgradeStarted")) == 2, timeout=30
        )
        await run.stop("freeze")
        fleet.backend.clear_faults(fault_id=b_hang.id)
        stopping = await wait_until(
            run, lambda s: (m := s.member("b-1")) is not None and m.state is State.COMPLETED
        )
        assert stopping.state is State.STOPPING
        await run.resume(reason="freeze cancelled")
        fleet.backend.clear_faults(fault_id=a_hang.id)
        done = await run.result()
        assert done.state is State.COMPLETED, done.error
        assert all(m.state is State.COMPLETED for _, _, m in done.members())


async def test_retrying_one_member_of_a_group_still_over_budget_runs_that_member(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    failing = {"on": "controlPlaneUpgrade", "kind": "fail", "message": "quota exceeded"}
    clusters = [Cluster(n, group="a", faults=[failing]) for n in ("a-1", "a-2")]
    both = strategy([{"name": "all", "groups": [{"name": "a", "maxConcurrency": "2"}]}])
    async with running_fleet(client, task_queue, state_dir, clusters) as fleet:
        run = await fleet.start_run(both)
        failed = await run.result()
        assert failed.state is State.FAILED
        assert [m.state for _, _, m in failed.members()] == [State.FAILED, State.FAILED]

        await run.retry(["a-1"], reason="quota raised for a-1")
        done = await run.result()
        retried = done.member("a-1")
        assert retried is not None
        assert retried.state is State.COMPLETED, (retried.state, done.error)
        assert retried.attempts == 2


async def test_dependents_of_a_skipped_stage_wait_for_its_members_still_in_flight(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    from engine.domain.fleet import Fault, FaultKind, FaultTrigger

    clusters = [Cluster("f-1", group="first"), Cluster("s-1", group="second")]
    chain = strategy(
        [
            {"name": "first", "groups": [{"name": "first"}]},
            {"name": "second", "groups": [{"name": "second"}]},
        ]
    )
    async with running_fleet(client, task_queue, state_dir, clusters) as fleet:
        hang = fleet.backend.add_fault(
            "f-1", Fault(kind=FaultKind.HANG, on=FaultTrigger.CONTROL_PLANE_UPGRADE)
        )
        run = await fleet.start_run(chain)
        await wait_until(run, lambda s: bool(fleet.audit("controlPlaneUpgradeStarted")))
        skipped = await run.skip([(SkipTargetType.STAGE, "first")], reason="enough of it")
        # The outcome that matters is below: s-1 starts only after f-1 has finished.
        assert skipped.stages[0].state is State.SKIPPED
        assert skipped.stages[1].state is State.NOT_STARTED, "started beside a member in flight"
        fleet.backend.clear_faults(fault_id=hang.id)
        done = await run.result()
        assert done.state is State.COMPLETED, done.error
        first, second = done.member("f-1"), done.member("s-1")
        assert first is not None
        assert second is not None
        assert first.state is State.COMPLETED
        assert first.completed_time is not None
        assert second.start_time is not None
        assert first.completed_time <= second.start_time


async def test_no_soak_follows_a_stage_in_which_nothing_was_upgraded(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """Every member of the stage is already at the target: its hour-long soak is Skipped
    (with the reason) instead of watched."""
    at_target = [Cluster("t-1", group="all", kubernetes="1.33.1")]
    soaking = strategy(
        [{"name": "all", "afterStageWait": "1h", "groups": [{"name": "all"}]}],
        soakCheckInterval="1s",
    )
    async with running_fleet(client, task_queue, state_dir, at_target) as fleet:
        run = await fleet.start_run(soaking)
        done = await wait_until(run, lambda s: s.state.finished, timeout=30)
        assert done.state is State.COMPLETED, done.error
        wait = done.stages[0].after_stage_wait
        assert wait is not None
        assert wait.state is State.SKIPPED
        assert wait.checks == 0
        assert "nothing was upgraded" in (wait.message or "")


async def test_a_soak_resumed_after_a_stop_serves_only_what_was_left(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    soaking = strategy(
        [{"name": "all", "afterStageWait": "60s", "groups": [{"name": "all"}]}],
        soakCheckInterval="1s",
    )
    async with running_fleet(client, task_queue, state_dir, FOUR[:1]) as fleet:
        run = await fleet.start_run(soaking)

        def soaked(status: RunStatus) -> bool:
            wait = status.stages[0].after_stage_wait if status.stages else None
            return wait is not None and wait.checks >= 5

        await wait_until(run, soaked, timeout=60)
        await run.stop("pause the soak")
        stopped = await run.result()
        assert stopped.state is State.STOPPED
        before = stopped.stages[0].after_stage_wait
        assert before is not None
        assert before.served_seconds >= 5

        resumed = await run.resume()
        resumed_at = resumed.controls[-1].at
        again = await wait_until(
            run,
            lambda s: (
                (w := s.stages[0].after_stage_wait) is not None
                and w.state is State.RUNNING
                and w.until is not None
                and w.until > resumed_at
            ),
        )
        wait = again.stages[0].after_stage_wait
        assert wait is not None
        assert wait.until is not None
        # Only what was left: less than a whole soak again. (What was left plus the time the
        # resume took to reach the soak, which grows with the machine's load, so no tighter.)
        assert wait.until - resumed_at < dt.timedelta(seconds=60)
        await run.skip([(SkipTargetType.AFTER_STAGE_WAIT, "all")], reason="seen enough")
        assert (await run.result()).state is State.COMPLETED


async def test_a_retry_after_a_continuity_give_up_tries_the_member_again(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """``solo`` alone serves a global service: preflight defers it, nothing else can free
    it, the run gives up on it. A retry must try it again (a new attempt), not give up at
    once on the old deferral."""
    services = [
        {"namespace": "shop", "name": "ledger", "clusters": {"solo": 2}, "minReadyEndpoints": 1}
    ]
    clusters = [Cluster("solo", group="all")]
    document = strategy([{"name": "all", "groups": [{"name": "all"}]}])
    async with running_fleet(client, task_queue, state_dir, clusters, services) as fleet:
        run = await fleet.start_run(document)
        failed = await run.result()
        assert failed.state is State.FAILED
        gave_up = failed.member("solo")
        assert gave_up is not None
        assert "cannot start" in (gave_up.message or "")
        assert gave_up.attempts == 1

        await run.retry(reason="try again")
        again = await run.result()
        retried = again.member("solo")
        assert retried is not None
        assert retried.attempts == 2, "the retry gave up without trying the member"
        assert not fleet.audit("serviceDrained"), "continuity was broken"
