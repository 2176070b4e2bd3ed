"""Recorders of the update run's golden histories: run by hand, never collected by the suite.

    .venv/bin/python -m pytest tests/histories/recorders_run.py -k NAME -p no:cacheprovider

Each recorder drives one run into one waiting state on today's code and saves
its history at that moment (a history still open replays up to its end). They
live apart from ``recorders.py`` so each workflow's owner records its own.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from temporalio.client import Client
from temporalio.testing import TimeSkipper

from engine.domain.fleet import Fault, FaultKind, FaultTrigger
from engine.domain.run import GateState, MemberStep, SkipTargetType, State
from engine.domain.runspec import RunSpec
from engine.runtime.runs import start_update_run
from strategies import parse_strategy
from tests.histories.record import HISTORIES, record
from tests.histories.recorders import _commit
from tests.runs.harness import TIMINGS, Cluster, running_fleet, strategy, wait_until

ONE_STAGE = [{"name": "all", "groups": [{"name": "all"}]}]


def _note(recorder: str, what: str) -> str:
    return f"Recorded at {_commit()} by recorders_run.py::{recorder}.\n\n{what}"


async def test_record_a_run_with_a_member_in_flight(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    clusters = [Cluster("a-1", group="all"), Cluster("a-2", group="all")]
    async with running_fleet(client, task_queue, state_dir, clusters) as fleet:
        fault = fleet.backend.add_fault(
            "a-1", Fault(kind=FaultKind.HANG, on=FaultTrigger.CONTROL_PLANE_UPGRADE)
        )
        run = await fleet.start_run(strategy(ONE_STAGE))
        await wait_until(
            run,
            lambda s: (
                any(m.step is MemberStep.CONTROL_PLANE for _, _, m in s.members())
                or bool(fleet.audit("controlPlaneUpgradeStarted"))
            ),
        )
        await record(
            client,
            run.workflow_id,
            "UpdateRun",
            "member-in-flight",
            _note(
                "test_record_a_run_with_a_member_in_flight",
                "Stage `all`, member a-1's child workflow running (its control plane hangs).",
            ),
        )
        fleet.backend.clear_faults(fault_id=fault.id)
        assert (await run.result()).state is State.COMPLETED


async def test_record_a_run_soaking_after_a_stage(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    soaking = strategy(
        [
            {"name": "first", "afterStageWait": "1h", "groups": [{"name": "all"}]},
        ],
        soakCheckInterval="1s",
    )
    async with running_fleet(client, task_queue, state_dir, [Cluster("a-1", group="all")]) as fleet:
        run = await fleet.start_run(soaking)
        await wait_until(
            run,
            lambda s: any(
                stage.after_stage_wait is not None and stage.after_stage_wait.checks >= 2
                for stage in s.stages
            ),
        )
        await record(
            client,
            run.workflow_id,
            "UpdateRun",
            "soaking",
            _note(
                "test_record_a_run_soaking_after_a_stage",
                "Stage `first` done, its one-hour afterStageWait running with soak checks.",
            ),
        )
        await run.skip([(SkipTargetType.AFTER_STAGE_WAIT, "first")], reason="recorded")
        assert (await run.result()).state is State.COMPLETED


async def test_record_a_run_waiting_at_an_approval_gate(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    gated = strategy(
        [
            {"name": "first", "groups": [{"name": "first", "members": ["a-1"]}]},
            {
                "name": "second",
                "beforeGates": [{"type": "Approval", "displayName": "change board"}],
                "groups": [{"name": "second", "members": ["a-2"]}],
            },
        ]
    )
    clusters = [Cluster("a-1"), Cluster("a-2")]
    async with running_fleet(client, task_queue, state_dir, clusters) as fleet:
        run = await fleet.start_run(gated)
        await wait_until(run, lambda s: any(g.state is GateState.PENDING for g in s.gates()))
        await record(
            client,
            run.workflow_id,
            "UpdateRun",
            "approval-pending",
            _note(
                "test_record_a_run_waiting_at_an_approval_gate",
                "Stage `first` completed; stage `second` Pending at its Approval gate.",
            ),
        )
        await run.approve("change board")
        assert (await run.result()).state is State.COMPLETED


async def test_record_a_run_with_a_member_pending_for_a_closed_window(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    # Opens on the weekday three days from now: closed now, whatever the time of day.
    day = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).strftime("%A")
    window = {
        "schedule": {"weekly": {"intervalWeeks": 1, "dayOfWeek": day}},
        "durationHours": 4,
        "startTime": "00:00",
    }
    async with running_fleet(
        client, task_queue, state_dir, [Cluster("a-1", group="all", window=window)]
    ) as fleet:
        run = await fleet.start_run(strategy(ONE_STAGE))
        await wait_until(run, lambda s: any(m.pending_until for _, _, m in s.members()))
        await record(
            client,
            run.workflow_id,
            "UpdateRun",
            "window-pending",
            _note(
                "test_record_a_run_with_a_member_pending_for_a_closed_window",
                "Member a-1 Pending until its weekly maintenance window opens.",
            ),
        )
        await run.stop("recorded")
        assert (await run.result()).state is State.STOPPED


async def test_record_a_stopped_run(client: Client, task_queue: str, state_dir: Path) -> None:
    clusters = [Cluster(f"a-{i}", group="all") for i in range(1, 4)]
    async with running_fleet(client, task_queue, state_dir, clusters) as fleet:
        run = await fleet.start_run(strategy(ONE_STAGE))
        await wait_until(run, lambda s: any(m.state is State.RUNNING for _, _, m in s.members()))
        await run.stop("change freeze", identity="oncall@example")
        assert (await run.result()).state is State.STOPPED
        await record(
            client,
            run.workflow_id,
            "UpdateRun",
            "stopped",
            _note(
                "test_record_a_stopped_run",
                "Stopped after its first member; the run lingers for resume.",
            ),
        )


async def test_record_a_failed_lingering_run(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    failing = {"on": "controlPlaneUpgrade", "kind": "fail", "message": "quota exceeded"}
    clusters = [Cluster("a-1", group="all", faults=[failing]), Cluster("a-2", group="all")]
    async with running_fleet(client, task_queue, state_dir, clusters) as fleet:
        run = await fleet.start_run(strategy(ONE_STAGE))
        assert (await run.result()).state is State.FAILED
        await record(
            client,
            run.workflow_id,
            "UpdateRun",
            "failed-lingering",
            _note(
                "test_record_a_failed_lingering_run",
                "a-1 failed (budget 0): the run Failed and lingers for retry and resume.",
            ),
        )


async def test_record_a_run_continued_as_new_during_its_soak(
    client: Client, time_skipping: TimeSkipper, task_queue: str, state_dir: Path
) -> None:
    """Recorded on the code that continues as new while waiting (guards later changes)."""
    soaking = strategy(
        [{"name": "all", "afterStageWait": "4h", "groups": [{"name": "all"}]}],
        soakCheckInterval="5m",
    )
    async with running_fleet(client, task_queue, state_dir, [Cluster("a-1", group="all")]) as fleet:
        spec = RunSpec(
            network=fleet.network, kubernetes_version="1.33", strategy=parse_strategy(soaking)
        )
        timings = TIMINGS.model_copy(update={"max_history_events": 300})
        run = await start_update_run(time_skipping.client, task_queue, spec, timings=timings)
        assert (await run.result()).state is State.COMPLETED
        latest = await run._handle.fetch_history()
        started = latest.events[0].workflow_execution_started_event_attributes
        first_run = started.continued_execution_run_id
        assert first_run, "the run never continued as new"
        note = _note(
            "test_record_a_run_continued_as_new_during_its_soak",
            "A 4 h soak checked every 5 min with maxHistoryEvents 300: `continued-as-new` is "
            "the execution before the final one (it ended by continuing as new), "
            "`continued-as-new-completed` the final one.",
        )
        previous = client.get_workflow_handle(run.workflow_id, run_id=first_run)
        history = await previous.fetch_history()
        target = HISTORIES / "UpdateRun" / "continued-as-new.json"
        target.write_text(history.to_json())
        target.with_suffix(".md").write_text(note.strip() + "\n")
        await record(client, run.workflow_id, "UpdateRun", "continued-as-new-completed", note)
