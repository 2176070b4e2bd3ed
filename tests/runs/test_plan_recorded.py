"""A run's plan is computed once and recorded: replays never plan again."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

import strategies
from engine.domain import run as contract
from engine.domain.run import State
from engine.runtime.worker import all_workflows, workflow_runner
from tests.runs.harness import Cluster, running_fleet, strategy, wait_until

CLUSTERS = [Cluster("a-1", group="a"), Cluster("b-1", group="b")]
TWO_STAGES = strategy(
    [{"name": "a", "groups": [{"name": "a"}]}, {"name": "b", "groups": [{"name": "b"}]}]
)


async def test_a_replay_reads_the_recorded_plan_and_never_runs_the_planner(
    client: Client, task_queue: str, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan is an activity's result in the history; a planner that fails cannot matter."""
    async with running_fleet(client, task_queue, state_dir, CLUSTERS) as fleet:
        run = await fleet.start_run(TWO_STAGES)
        status = await run.result()
        assert status.state is State.COMPLETED, status.error
        history = await client.get_workflow_handle(run.workflow_id).fetch_history()

    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert scheduled.count(contract.COMPUTE_PLAN) == 1

    def newer_planner(*_args: object, **_kwargs: object) -> object:
        raise AssertionError("a replay planned again")

    # Planner code that changed (here: that cannot plan at all) since the run started.
    monkeypatch.setattr(strategies, "plan", newer_planner)
    replayer = Replayer(
        workflows=all_workflows(),
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


async def test_a_plan_the_rules_refuse_fails_the_run_with_every_reason(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """A member in no group: the recorded result carries the refusal, the run says it."""
    only_a = strategy([{"name": "a", "groups": [{"name": "a"}]}])
    async with running_fleet(client, task_queue, state_dir, CLUSTERS) as fleet:
        run = await fleet.start_run(only_a)
        status = await wait_until(run, lambda s: s.state is State.FAILED)
    assert status.error is not None
    assert "the plan was rejected" in status.error
    assert "b-1" in status.error
