"""Auto-upgrade profiles on real Temporal Schedules of the session server.

Schedules run inside the server on its own clock: the per-workflow time
skipping of the test server does not move them. So when a schedule fires is
asked of the server (``describe().info.next_action_times``, with
``ScheduleSpec.start_at`` to look at a winter and a summer), and firings are
made with ``trigger()``; pausing is shown on a schedule of the profile whose
calendar is swapped for a one-second interval.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleSpec,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import TimeSkipper
from temporalio.worker import Replayer

from activities.auto_upgrade import AutoUpgradeActivities, RunStarter
from activities.backends.simulated import SimulatedFleetBackend
from activities.health import health_check
from activities.member_steps import MemberStepActivities
from activities.network import HolderActivities, NetworkActivities
from activities.run_steps import RunStepActivities
from engine.domain.errors import InvalidInputError, NotFoundError
from engine.domain.fleet import parse_fleet
from engine.domain.run import GateState, MemberStatus, State
from engine.domain.runspec import RunSpec
from engine.domain.schedule import (
    AutoUpgradeProfile,
    Channel,
    FleetWindow,
    ProfileStatus,
    TriggerStatus,
    schedule_id,
)
from engine.runtime.client import MeshfleetClient
from engine.runtime.runs import UpdateRunHandle, find_run, start_update_run
from engine.runtime.schedules import build_schedule
from engine.runtime.worker import build_worker, workflow_runner
from strategies import fleet_window_end, fleet_window_next_opening
from tests.polling import eventually
from tests.runs.harness import TIMINGS, Cluster, create_network, fleet_document, strategy
from workflows.auto_upgrade import AutoUpgradeWorkflow

UTC = dt.UTC
#: Every day, all day: runs the tests start never wait for an opening.
ALWAYS_OPEN = {
    "days": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
    "startTime": "00:00",
    "durationHours": 24,
}
SATURDAY_BERLIN = {
    "days": ["Sat"],
    "startTime": "02:00",
    "timeZone": "Europe/Berlin",
    "durationHours": 4,
}


async def fast_start(client: Client, task_queue: str, spec: RunSpec) -> UpdateRunHandle:
    """The production starter with the run harness's short timings."""
    return await start_update_run(client, task_queue, spec, timings=TIMINGS)


@dataclass
class Site:
    client: MeshfleetClient
    backend: SimulatedFleetBackend
    network: str
    names: list[str]

    def profile(
        self, channel: Channel, target: str | None = None, **fields: Any
    ) -> AutoUpgradeProfile:
        name = f"p-{uuid.uuid4().hex[:8]}"
        self.names.append(name)
        document: dict[str, Any] = {
            "name": name,
            "network": self.network,
            "strategy": strategy(
                [{"name": "all", "groups": [{"name": "g", "maxConcurrency": "2"}]}]
            ),
            "channel": channel,
            "targetKubernetesVersion": target,
            "window": ALWAYS_OPEN,
        }
        document.update(fields)
        return AutoUpgradeProfile.model_validate(document)

    async def runs(self) -> list[str]:
        """The network's update runs, straight from the server (no visibility lag)."""
        found = []
        async for execution in self.client.temporal.list_workflows(
            f'WorkflowType = "UpdateRun" AND WorkflowId STARTS_WITH "updaterun/{self.network}/"'
        ):
            found.append(execution.id)
        return found


@contextlib.asynccontextmanager
async def site(
    client: Client,
    task_queue: str,
    state_dir: Path,
    clusters: Sequence[Cluster],
    start_run: RunStarter = fast_start,
) -> AsyncIterator[Site]:
    """A simulated fleet, a worker with every workflow and activity, and a network of it all."""
    backend = SimulatedFleetBackend(state_dir)
    backend.load(parse_fleet(fleet_document(clusters)))
    activities = [
        health_check,
        *RunStepActivities(backend, client).all(),
        *MemberStepActivities(backend, client).all(),
        *NetworkActivities(backend, poll_interval=dt.timedelta(milliseconds=100)).all(),
        *HolderActivities(client).all(),
        *AutoUpgradeActivities(backend, client, start_run).all(),
    ]
    network = f"net-{uuid.uuid4().hex[:8]}"
    meshfleet = MeshfleetClient(client, task_queue=task_queue)
    here = Site(meshfleet, backend, network, [])
    async with build_worker(client, task_queue, backend=backend, activities=activities):
        await create_network(client, task_queue, network, [c.name for c in clusters])
        try:
            yield here
        finally:
            for name in here.names:
                with contextlib.suppress(NotFoundError):
                    await meshfleet.delete_schedule(name)


def fleet_at(version: str, cilium: str, count: int = 2) -> list[Cluster]:
    return [Cluster(f"c{i}", group="g", kubernetes=version, cilium=cilium) for i in range(count)]


# --- when a schedule fires --------------------------------------------------------------------


async def next_times(client: Client, task_queue: str, start_at: dt.datetime) -> list[dt.datetime]:
    """The server's next action times for a Saturday 02:00 Europe/Berlin profile after start_at."""
    profile = AutoUpgradeProfile.model_validate(
        {
            "name": f"t-{uuid.uuid4().hex[:8]}",
            "network": "any",
            "strategy": strategy([{"name": "all", "groups": [{"name": "g"}]}]),
            "channel": "Rapid",
            "window": {
                "days": ["Sat"],
                "startTime": "02:00",
                "timeZone": "Europe/Berlin",
                "durationHours": 4,
                "skipDates": ["2031-01-11"],
            },
        }
    )
    schedule = build_schedule(profile, task_queue)
    assert isinstance(schedule.spec, ScheduleSpec)
    schedule.spec.start_at = start_at
    handle = await client.create_schedule(schedule_id(profile.name), schedule)
    try:
        return list((await handle.describe()).info.next_action_times)
    finally:
        await handle.delete()


async def test_saturday_two_am_berlin_fires_at_one_utc_in_winter_and_midnight_in_summer(
    client: Client, task_queue: str
) -> None:
    winter = await next_times(client, task_queue, dt.datetime(2030, 12, 1, tzinfo=UTC))
    assert winter[:2] == [
        dt.datetime(2030, 12, 7, 1, 0, tzinfo=UTC),
        dt.datetime(2030, 12, 14, 1, 0, tzinfo=UTC),
    ]
    summer = await next_times(client, task_queue, dt.datetime(2031, 6, 1, tzinfo=UTC))
    assert summer[:2] == [
        dt.datetime(2031, 6, 7, 0, 0, tzinfo=UTC),
        dt.datetime(2031, 6, 14, 0, 0, tzinfo=UTC),
    ]
    # Across the spring-forward weekend (2031-03-30) the UTC time moves by the hour.
    spring = await next_times(client, task_queue, dt.datetime(2031, 3, 20, tzinfo=UTC))
    assert spring[:3] == [
        dt.datetime(2031, 3, 22, 1, 0, tzinfo=UTC),
        dt.datetime(2031, 3, 29, 1, 0, tzinfo=UTC),
        dt.datetime(2031, 4, 5, 0, 0, tzinfo=UTC),
    ]


async def test_a_skip_date_is_not_fired(client: Client, task_queue: str) -> None:
    times = await next_times(client, task_queue, dt.datetime(2031, 1, 1, tzinfo=UTC))
    assert times[:3] == [
        dt.datetime(2031, 1, 4, 1, 0, tzinfo=UTC),
        dt.datetime(2031, 1, 18, 1, 0, tzinfo=UTC),  # 2031-01-11 is a skip date
        dt.datetime(2031, 1, 25, 1, 0, tzinfo=UTC),
    ]


# --- what a trigger does ----------------------------------------------------------------------


async def test_a_trigger_with_every_member_current_records_nothing_to_do(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    async with site(client, task_queue, state_dir, fleet_at("1.36.1", "1.18.9")) as here:
        profile = here.profile(Channel.RAPID)
        created = await here.client.create_schedule(profile)
        assert created.last_trigger_status is None
        status = await here.client.trigger_schedule(profile.name)
        assert status.last_trigger_status is TriggerStatus.NOTHING_TO_DO
        assert status.last_trigger_error is None
        assert status.last_trigger_upgrade_versions == []
        assert status.last_run is None
        assert status.last_triggered_at is not None
        assert await here.runs() == []


async def test_one_minor_behind_creates_one_run_and_a_second_trigger_returns_it(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    async with site(client, task_queue, state_dir, fleet_at("1.32.6", "1.17.9")) as here:
        profile = here.profile(Channel.TARGET_KUBERNETES_VERSION, "1.33", startRun=False)
        await here.client.create_schedule(profile)
        first = await here.client.trigger_schedule(profile.name)
        assert first.last_trigger_status is TriggerStatus.SUCCEEDED, first.last_trigger_error
        assert first.last_trigger_upgrade_versions == ["1.33"]
        assert first.last_run is not None
        assert first.last_run.created
        run = first.last_run.run
        assert run == f"auto-{profile.name}-1-33"

        second = await here.client.trigger_schedule(profile.name)
        assert second.last_trigger_status is TriggerStatus.SUCCEEDED
        assert second.last_run is not None
        assert (second.last_run.run, second.last_run.created) == (run, False)
        assert second.trigger_count == 2
        assert await here.runs() == [f"updaterun/{here.network}/{run}"]

        # Not started by the profile: the run waits at its start gate.
        handle = await find_run(client, run, here.network)

        async def waiting_at_start() -> bool:
            gate = (await handle.status()).gates()[0]
            return gate.display_name == "start" and gate.state is GateState.PENDING

        await eventually(waiting_at_start)
        assert all(m.state is State.NOT_STARTED for _, _, m in (await handle.status()).members())

        # Both triggers replay deterministically from their recorded histories.
        described = await client.get_schedule_handle(schedule_id(profile.name)).describe()
        replayer = Replayer(
            workflows=[AutoUpgradeWorkflow],
            data_converter=pydantic_data_converter,
            workflow_runner=workflow_runner(),
        )
        for action in described.info.recent_actions:
            started = action.action
            assert isinstance(started, ScheduleActionExecutionStartWorkflow)
            history = await client.get_workflow_handle(started.workflow_id).fetch_history()
            await replayer.replay_workflow(history)


async def test_a_started_run_takes_the_members_to_the_target(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    async with site(client, task_queue, state_dir, fleet_at("1.35.2", "1.18.6")) as here:
        profile = here.profile(Channel.RAPID)
        await here.client.create_schedule(profile)
        status = await here.client.trigger_schedule(profile.name)
        assert status.last_trigger_status is TriggerStatus.SUCCEEDED, status.last_trigger_error
        assert status.last_run is not None
        final = await (await find_run(client, status.last_run.run, here.network)).result()
        assert final.state is State.COMPLETED, final.error
        # A target without a patch resolves to the catalog's latest known patch of the minor.
        assert {m.to.kubernetes_version for _, _, m in final.members()} == {"1.36.1"}


async def test_a_member_two_minors_behind_is_taken_one_minor(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    clusters = [
        Cluster("c0", group="g", kubernetes="1.33.4", cilium="1.17.9"),
        Cluster("c1", group="g", kubernetes="1.34.2", cilium="1.18.6"),
    ]
    async with site(client, task_queue, state_dir, clusters) as here:
        profile = here.profile(Channel.TARGET_KUBERNETES_VERSION, "1.35", startRun=False)
        await here.client.create_schedule(profile)
        status = await here.client.trigger_schedule(profile.name)
        assert status.last_trigger_status is TriggerStatus.SUCCEEDED, status.last_trigger_error
        # c0 (two minors behind 1.35) goes to 1.34, not 1.35; c1 waits for a later trigger.
        assert status.last_trigger_upgrade_versions == ["1.34"]
        assert status.last_run is not None
        assert status.last_run.run == f"auto-{profile.name}-1-34"


async def test_members_too_far_apart_record_a_failed_trigger(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    clusters = [
        Cluster("c0", group="g", kubernetes="1.32.6", cilium="1.17.9"),
        Cluster("c1", group="g", kubernetes="1.34.2", cilium="1.18.6"),
    ]
    async with site(client, task_queue, state_dir, clusters) as here:
        profile = here.profile(Channel.RAPID)
        await here.client.create_schedule(profile)
        status = await here.client.trigger_schedule(profile.name)
        assert status.last_trigger_status is TriggerStatus.FAILED
        assert status.last_trigger_error is not None
        assert "would have to move down" in status.last_trigger_error
        assert await here.runs() == []


# --- pause, list, create ----------------------------------------------------------------------


async def test_a_paused_schedule_does_not_fire(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    async with site(client, task_queue, state_dir, fleet_at("1.36.1", "1.18.9")) as here:
        profile = here.profile(Channel.RAPID)
        await here.client.create_schedule(profile)
        paused = await here.client.pause_schedule(profile.name, note="change freeze")
        assert paused.paused
        assert paused.note == "change freeze"
        assert paused.next_action_times == []
        unpaused = await here.client.unpause_schedule(profile.name)
        assert not unpaused.paused
        assert unpaused.next_action_times

        # The same profile's schedule, firing every second instead of on Saturdays.
        every_second = here.profile(Channel.RAPID, disabled=True)
        schedule = build_schedule(every_second, task_queue)
        schedule.spec = ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=dt.timedelta(seconds=1))]
        )
        handle = await client.create_schedule(
            schedule_id(every_second.name),
            schedule,
            memo={"meshfleetProfile": every_second.to_json_dict()},
        )
        assert (await here.client.show_schedule(every_second.name)).paused
        # Paused on the server itself (what keeps it from firing), nothing taken so far.
        described = await handle.describe()
        assert described.schedule.state.paused
        assert described.info.num_actions == 0
        await handle.unpause()

        async def fired() -> ProfileStatus | None:
            status = await here.client.show_schedule(every_second.name)
            return status if status.last_trigger_status is not None else None

        status = await eventually(fired)
        assert status.last_trigger_status is TriggerStatus.NOTHING_TO_DO


async def test_list_shows_the_next_times(client: Client, task_queue: str, state_dir: Path) -> None:
    async with site(client, task_queue, state_dir, fleet_at("1.36.1", "1.18.9")) as here:
        profile = here.profile(Channel.STABLE, window=SATURDAY_BERLIN)
        await here.client.create_schedule(profile)

        async def listed() -> ProfileStatus | None:
            found = [
                s for s in await here.client.list_schedules() if s.profile.name == profile.name
            ]
            return found[0] if found else None

        status = await eventually(listed)
        assert status.profile == profile
        times = status.next_action_times
        assert len(times) == 10
        berlin = [t.astimezone(profile.window.zone) for t in times]
        assert all((t.weekday(), t.hour, t.minute) == (5, 2, 0) for t in berlin)
        assert all(b - a == dt.timedelta(days=7) for a, b in itertools.pairwise(berlin))


async def test_create_refuses_an_unknown_network_and_a_taken_name(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    async with site(client, task_queue, state_dir, fleet_at("1.36.1", "1.18.9")) as here:
        profile = here.profile(Channel.RAPID)
        with pytest.raises(InvalidInputError, match="does not exist"):
            await here.client.create_schedule(profile.model_copy(update={"network": "nowhere"}))
        await here.client.create_schedule(profile)
        with pytest.raises(InvalidInputError, match="already exists"):
            await here.client.create_schedule(profile)
        await here.client.delete_schedule(profile.name)
        with pytest.raises(NotFoundError):
            await here.client.show_schedule(profile.name)


# --- the window's end ------------------------------------------------------------------------


async def test_a_run_whose_window_ends_starts_nothing_new_and_resumes_at_the_next_opening(
    client: Client, time_skipping: TimeSkipper, task_queue: str, state_dir: Path
) -> None:
    """The first stage runs in the window; the window ends while the second stage waits at a
    gate; approved after the end, its members wait Pending and start at the next opening."""

    async def on_virtual_clock(client: Client, task_queue: str, spec: RunSpec) -> UpdateRunHandle:
        # The trigger's own client is replaced: the run gets its own virtual clock.
        return await start_update_run(time_skipping.client, task_queue, spec, timings=TIMINGS)

    now = dt.datetime.now(UTC).replace(second=0, microsecond=0)
    window = FleetWindow.model_validate(
        {**ALWAYS_OPEN, "startTime": f"{now - dt.timedelta(minutes=5):%H:%M}", "durationHours": 1}
    )
    end = fleet_window_end(window, now)
    assert end is not None
    reopens = fleet_window_next_opening(window, end)
    assert reopens == end + dt.timedelta(hours=23)
    clusters = [
        Cluster("c0", group="a", kubernetes="1.32.6", cilium="1.17.9"),
        Cluster("c1", group="b", kubernetes="1.32.6", cilium="1.17.9"),
        Cluster("c2", group="b", kubernetes="1.32.6", cilium="1.17.9"),
    ]
    async with site(client, task_queue, state_dir, clusters, on_virtual_clock) as here:
        profile = here.profile(
            Channel.TARGET_KUBERNETES_VERSION,
            "1.33",
            window=window.to_json_dict(),
            strategy=strategy(
                [
                    {"name": "first", "groups": [{"name": "a"}]},
                    {
                        "name": "second",
                        "beforeGates": [{"type": "Approval", "displayName": "go"}],
                        "groups": [{"name": "b", "maxConcurrency": "2"}],
                    },
                ]
            ),
        )
        await here.client.create_schedule(profile)
        status = await here.client.trigger_schedule(profile.name)
        assert status.last_run is not None, status.last_trigger_error
        run = await find_run(client, status.last_run.run, here.network)

        async def gate_waits() -> bool:
            gates = (await run.status()).gates()
            return bool(gates) and gates[0].state is GateState.PENDING

        await eventually(gate_waits)
        workflow = time_skipping.client.get_workflow_handle(run.workflow_id)
        await time_skipping.fast_forward(workflow, end - now + dt.timedelta(minutes=10))
        await run.approve("go", "after the window's end")

        async def pending() -> list[MemberStatus] | None:
            members = [m for _, _, m in (await run.status()).members() if m.name != "c0"]
            return members if all(m.state is State.PENDING for m in members) else None

        waiting = await eventually(pending)
        assert {m.pending_until for m in waiting} == {reopens}
        # A bounded fast-forward replaced the automatic skipping: move on to the next opening.
        await time_skipping.fast_forward(workflow, dt.timedelta(hours=24))

        done = await run.result()
        assert done.state is State.COMPLETED, done.error
        first = done.member("c0")
        assert first is not None
        assert first.start_time is not None
        assert first.start_time < end
        for name in ("c1", "c2"):
            member = done.member(name)
            assert member is not None
            assert member.start_time is not None
            assert reopens <= member.start_time < reopens + dt.timedelta(hours=1), name
