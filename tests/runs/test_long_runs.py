"""Long runs keep their histories bounded: they continue as new while they only wait."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from temporalio.client import Client, WorkflowHistory
from temporalio.testing import TimeSkipper

from engine.domain.run import State
from engine.domain.runspec import RunSpec
from engine.runtime.runs import UpdateRunHandle, start_update_run
from strategies import parse_strategy
from tests.runs.harness import TIMINGS, Cluster, running_fleet, strategy

BOUND = 300


async def chain_of_histories(client: Client, run: UpdateRunHandle) -> list[WorkflowHistory]:
    """Every history of the run's continue-as-new chain, newest first."""
    histories = [await run._handle.fetch_history()]
    while True:
        started = histories[-1].events[0].workflow_execution_started_event_attributes
        previous = started.continued_execution_run_id
        if not previous:
            return histories
        handle = client.get_workflow_handle(run.workflow_id, run_id=previous)
        histories.append(await handle.fetch_history())


async def test_a_four_hour_soak_continues_as_new_and_keeps_the_time_it_served(
    client: Client, time_skipping: TimeSkipper, task_queue: str, state_dir: Path
) -> None:
    """Checked every 5 minutes, four hours of soak are ~50 checks of ~11 events each: past
    the run's bound of 300 events, so the run continues as new (more than once), each
    history stays near the bound, and the soak still lasts four hours, not more."""
    soaking = strategy(
        [{"name": "all", "afterStageWait": "4h", "groups": [{"name": "all"}]}],
        soakCheckInterval="5m",
    )
    async with running_fleet(client, task_queue, state_dir, [Cluster("s-1", group="all")]) as fleet:
        spec = RunSpec(
            network=fleet.network, kubernetes_version="1.33", strategy=parse_strategy(soaking)
        )
        timings = TIMINGS.model_copy(update={"max_history_events": BOUND})
        run = await start_update_run(time_skipping.client, task_queue, spec, timings=timings)
        done = await run.result()
        assert done.state is State.COMPLETED, done.error
        wait = done.stages[0].after_stage_wait
        assert wait is not None
        assert wait.state is State.COMPLETED
        assert 40 <= wait.checks <= 50, wait.checks
        stage = done.stages[0]
        assert stage.completed_time is not None
        assert wait.until is not None

        histories = await chain_of_histories(client, run)
        assert len(histories) >= 2, "the run never continued as new"
        sizes = [len(h.events) for h in histories]
        assert max(sizes) <= BOUND + 25, sizes
        starts = [m.start_time for _, _, m in done.members() if m.start_time]
        assert starts
        assert stage.completed_time - starts[0] < dt.timedelta(hours=4, minutes=30)
        assert stage.completed_time - starts[0] >= dt.timedelta(hours=4)


async def test_a_member_waiting_for_its_window_arms_one_timer_however_much_else_changes(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """Group ``w`` waits days for a window while group ``busy`` upgrades four members one by
    one (dozens of status changes): the run's history holds one timer for that opening."""
    from temporalio.api.enums.v1 import EventType

    from tests.runs.harness import wait_until

    day = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).strftime("%A")
    window = {
        "schedule": {"weekly": {"intervalWeeks": 1, "dayOfWeek": day}},
        "durationHours": 4,
        "startTime": "00:00",
    }
    clusters = [
        Cluster("w-1", group="w", window=window),
        *(Cluster(f"busy-{i}", group="busy") for i in range(1, 5)),
    ]
    two_groups = strategy([{"name": "all", "groups": [{"name": "w"}, {"name": "busy"}]}])
    async with running_fleet(client, task_queue, state_dir, clusters) as fleet:
        run = await fleet.start_run(two_groups)
        await wait_until(
            run,
            lambda s: sum(1 for _, _, m in s.members() if m.state is State.COMPLETED) == 4,
            timeout=60,
        )
        history = await run._handle.fetch_history()
        timers = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED]
        assert len(timers) == 1, f"{len(timers)} timers armed for one window opening"
        await run.stop("recorded enough")
