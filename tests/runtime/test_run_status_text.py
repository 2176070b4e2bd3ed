"""``meshfleet run status`` as text says what used to show only in JSON."""

from __future__ import annotations

import io

from rich.console import Console

from engine.domain.run import AfterStageWaitStatus, RunStatus, State
from engine.runtime.cli.run import render_status
from tests.runs.test_run_machine import run_status

NOT_UPGRADED = "nothing was upgraded in this stage: no soak needed"
LEFT = (
    'LEFT DRAINED: a-1 still has service.cilium.io/shared: "false" on shop/cart: '
    "the restore failed: the API server said no"
)


def as_text(status: RunStatus) -> str:
    console = Console(file=io.StringIO(), width=240, record=True, color_system=None)
    console.print(render_status(status))
    return console.export_text()


def test_run_status_text_lists_the_members_that_joined_since_the_plan() -> None:
    status = run_status()
    status.joined_since_plan = ["late-1", "late-2"]
    assert "joined since the plan (not in this run): late-1, late-2" in as_text(status)


def test_run_status_text_says_a_soak_was_skipped_and_why() -> None:
    status = run_status()
    status.stages[0].after_stage_wait = AfterStageWaitStatus(
        state=State.SKIPPED, seconds=600, message=NOT_UPGRADED
    )
    status.stages[1].after_stage_wait = AfterStageWaitStatus(state=State.SKIPPED, seconds=60)
    lines = as_text(status).splitlines()
    one = next(line for line in lines if line.startswith("one "))
    two = next(line for line in lines if line.startswith("two "))
    assert f"soak skipped: {NOT_UPGRADED}" in one
    assert "soak skipped" in two


def test_run_status_text_calls_out_a_member_left_drained_below_the_table() -> None:
    status = run_status()
    left = status.stages[0].groups[0].members[0]
    left.state = State.FAILED
    left.message = LEFT
    status.stages[0].groups[0].members[1].state = State.FAILED
    status.stages[0].groups[0].members[1].message = "controlPlane failed: quota exceeded"
    lines = as_text(status).splitlines()
    start = lines.index("members left drained (restore them by hand):")
    assert lines[start + 1].strip() == f"a-1: {LEFT}"
    assert not any("quota exceeded" in line for line in lines[start:])


def test_run_status_text_has_no_extra_lines_when_there_is_nothing_to_call_out() -> None:
    text = as_text(run_status())
    assert "joined since the plan" not in text
    assert "soak skipped" not in text
    assert "left drained" not in text
