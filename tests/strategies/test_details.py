"""The run's current details: a GFM table that stays aligned in the Temporal Web UI 2.54."""

from __future__ import annotations

import re

from engine.domain.plan import VersionPair
from engine.domain.run import GroupStatus, MemberStatus, RunStatus, StageStatus, State
from strategies.details import GUTTER, details_markdown, markdown_table


def member(name: str, state: str) -> MemberStatus:
    return MemberStatus.model_validate(
        {
            "name": name,
            "state": state,
            "from": {"kubernetesVersion": "1.32", "ciliumVersion": "1.17.9"},
            "to": {"kubernetesVersion": "1.33", "ciliumVersion": "1.18.1"},
        }
    )


def stage(name: str, state: State, *members: MemberStatus) -> StageStatus:
    group = GroupStatus(name="g", max_concurrency=1, max_allowed_failures=0, members=list(members))
    return StageStatus(
        name=name, state=state, max_concurrency=1, max_allowed_failures=0, groups=[group]
    )


STATUS = RunStatus(
    run_id="r",
    name="ring-1",
    network="prod-mesh",
    state=State.RUNNING,
    target=VersionPair(kubernetes_version="1.33", cilium_version="1.18.1"),
    error="stage europe: 1 member failed",
    stages=[
        stage("canary", State.COMPLETED, member("a", "Completed"), member("b", "Skipped")),
        stage(
            "europe",
            State.RUNNING,
            member("c", "Running"),
            member("d", "Pending"),
            member("e", "Failed"),
        ),
    ],
)


def cells(line: str) -> list[str]:
    return [cell.strip(" \u00a0") for cell in line.strip().strip("|").split("|")]


def test_the_details_are_a_title_and_a_table_with_a_blank_line_around_it() -> None:
    lines = details_markdown(STATUS).splitlines()
    assert lines[0] == "**ring-1** on `prod-mesh` → Kubernetes 1.33: **Running**"
    assert lines[1] == ""
    assert cells(lines[2]) == ["stage", "state", "done", "running", "pending", "failed"]
    assert re.fullmatch(r"\|(:?-{3,}:?\|){6}", lines[3]), lines[3]
    assert cells(lines[4]) == ["canary", "Completed", "2/2", "0", "0", "0"]
    assert cells(lines[5]) == ["europe", "Running", "0/3", "1", "1", "1"]
    assert lines[6] == ""
    assert lines[7] == "error: stage europe: 1 member failed"


def test_every_cell_keeps_a_gutter_html_does_not_collapse() -> None:
    table = markdown_table(["a", "b"], [["1", "2"]], right=1)
    for line in (table.splitlines()[0], table.splitlines()[2]):
        for cell in line.strip("|").split("|"):
            assert cell.strip(" ").startswith(GUTTER)
            assert cell.strip(" ").endswith(GUTTER)
    assert "\u00a0" in GUTTER
    assert table.splitlines()[1] == "|:---|---:|"
