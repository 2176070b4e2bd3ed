"""Every golden history replays against today's workflow code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from engine.runtime.worker import all_workflows, workflow_runner

HISTORIES = Path(__file__).parent
GOLDEN = sorted(HISTORIES.glob("*/*.json"))


def _workflow_id(raw: str) -> str:
    """The workflow id of a recorded history, read from its first event."""
    started = json.loads(raw)["events"][0]["workflowExecutionStartedEventAttributes"]
    # Histories carry no workflow id of their own; the type and first run id identify them.
    return str(started.get("originalExecutionRunId") or started["workflowType"]["name"])


def _load(path: Path) -> WorkflowHistory:
    """Read one golden history; each must come with its note."""
    assert path.with_suffix(".md").exists(), f"{path} has no note saying how it was recorded"
    raw = path.read_text()
    return WorkflowHistory.from_json(_workflow_id(raw), raw)


@pytest.mark.parametrize("path", GOLDEN, ids=[f"{p.parent.name}/{p.stem}" for p in GOLDEN])
async def test_a_golden_history_replays_on_todays_code(path: Path) -> None:
    """A history recorded by earlier code replays without a nondeterminism error."""
    history = _load(path)
    replayer = Replayer(
        workflows=all_workflows(),
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


def test_the_suite_keeps_golden_histories() -> None:
    """The replay test above must have something to replay (it cannot pass on nothing)."""
    assert GOLDEN, "tests/histories/ holds no golden history"
