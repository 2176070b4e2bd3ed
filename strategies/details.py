"""What the Temporal Web UI shows of a run: its current details, as markdown (pure).

The run workflow publishes this with ``workflow.set_current_details`` after
each batch of status changes. The Web UI (2.54) renders GitHub tables but
gives their cells no padding, so cells would run together (``Completed2/2``):
each cell carries non-breaking spaces on both sides, which HTML does not
collapse, and the counts are right-aligned. Blank lines around the table keep
it a table for any GFM renderer; a plain-text reader (``temporal workflow
describe``) sees an ordinary markdown table.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.domain.run import MemberStatus, RunStatus, State

#: Space that HTML keeps: the gutter between the Web UI's unpadded table cells.
GUTTER = "\u00a0\u00a0"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(f"{GUTTER}{cell}{GUTTER}" for cell in cells) + " |"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, right: int = 0) -> str:
    """A GFM table whose cells stay apart unpadded; the last ``right`` columns right-aligned."""
    left = len(header) - right
    separator = "|" + "|".join([":---"] * left + ["---:"] * right) + "|"
    return "\n".join([_row(header), separator, *(_row(row) for row in rows)])


def _count(members: Sequence[MemberStatus], *states: State) -> int:
    return sum(1 for member in members if member.state in states)


def details_markdown(status: RunStatus) -> str:
    """The run's current details: a title line, then one table row per stage."""
    target = status.target.kubernetes_version if status.target else "?"
    rows = []
    for stage in status.stages:
        members = [m for g in stage.groups for m in g.members]
        rows.append(
            [
                stage.name,
                stage.state.value,
                f"{_count(members, State.COMPLETED, State.SKIPPED)}/{len(members)}",
                str(_count(members, State.RUNNING)),
                str(_count(members, State.PENDING)),
                str(_count(members, State.FAILED)),
            ]
        )
    lines = [
        f"**{status.name}** on `{status.network}` → Kubernetes {target}: **{status.state.value}**",
        "",
        markdown_table(["stage", "state", "done", "running", "pending", "failed"], rows, right=4),
        "",
    ]
    if status.error:
        lines += [f"error: {status.error}", ""]
    return "\n".join(lines).rstrip("\n") + "\n"
