"""The Web UI bundled with the server (Temporal UI 2.54): run details, finding work by cluster."""

from __future__ import annotations

import asyncio
import re
import urllib.parse
import urllib.request
from pathlib import Path

from temporalio.client import Client

from engine.domain.run import State, member_workflow_id
from engine.runtime import devserver
from strategies.details import details_markdown
from tests.polling import eventually
from tests.runs.harness import Cluster, running_fleet, strategy
from tests.strategies.test_details import STATUS


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        body: bytes = response.read()
    return body.decode()


async def test_the_web_ui_renders_the_run_details_as_a_table_whose_cells_stay_apart(
    tmp_path: Path,
) -> None:
    """Through the real UI's markdown renderer: a <table>, each cell with its gutter."""
    server = await devserver.start_embedded_server(tmp_path, grpc_port=None, ui_port=None)
    try:
        assert server.ui_url is not None
        content = urllib.parse.quote(details_markdown(STATUS))
        url = f"{server.ui_url.rstrip('/')}/render?content={content}&theme=light"
        html = await asyncio.to_thread(fetch, url)
    finally:
        server.stop()
    assert "<table>" in html
    rows = [
        [
            re.sub(r"<[^>]+>", "", cell)
            for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)
        ]
        for row in re.findall(r"<tr>(.*?)</tr>", html, re.S)
    ]
    nbsp = re.compile(r"&#xa0;|&nbsp;|\u00a0", re.IGNORECASE)
    texts = [[nbsp.sub("\u00a0", cell) for cell in row] for row in rows]
    assert [cell.strip("\u00a0") for cell in texts[1]] == [
        "canary",
        "Completed",
        "2/2",
        "0",
        "0",
        "0",
    ]
    # The gutters survive the renderer: adjacent cells can never read "Completed2/2".
    assert all(
        cell.startswith("\u00a0") and cell.endswith("\u00a0") for row in texts for cell in row
    )


async def workflow_ids(client: Client, query: str, expected: set[str]) -> set[str]:
    """The ids the query lists, once visibility has caught up with ``expected`` (or 30 s)."""

    async def caught_up() -> set[str] | None:
        found = {execution.id async for execution in client.list_workflows(query)}
        return found if found >= expected else None

    found = await eventually(caught_up, timeout=30, what=f"{query!r} to list {sorted(expected)}")
    assert found is not None
    return found


async def test_meshfleet_member_finds_every_run_and_member_update_that_touched_a_cluster(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    clusters = [Cluster("sa-1", group="all"), Cluster("sa-2", group="all")]
    async with running_fleet(client, task_queue, state_dir, clusters) as fleet:
        run = await fleet.start_run(strategy([{"name": "all", "groups": [{"name": "all"}]}]))
        assert (await run.result()).state is State.COMPLETED
        member_two = member_workflow_id(fleet.network, run.name, "sa-2")
        query = f'MeshfleetMember = "sa-2" AND MeshfleetNetwork = "{fleet.network}"'
        touched = await workflow_ids(client, query, {run.workflow_id, member_two})
        # The run names every member it set out to update; each member workflow only its own.
        assert touched == {run.workflow_id, member_two}
        members_only = await workflow_ids(
            client,
            f'WorkflowType = "MemberUpdate" AND MeshfleetMember = "sa-1" '
            f'AND WorkflowId STARTS_WITH "{run.workflow_id}/"',
            {member_workflow_id(fleet.network, run.name, "sa-1")},
        )
        assert members_only == {member_workflow_id(fleet.network, run.name, "sa-1")}
