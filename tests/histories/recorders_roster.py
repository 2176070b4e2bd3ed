"""Recorders of how a run hands its members the network's member list: run by hand.

    MEMBERS_STATE=members-listed .venv/bin/python -m pytest tests/histories/recorders_roster.py

Like ``recorders.py``: each recorder drives one run to its end on the code of the
commit it names and writes the run's history and one member's. They guard the
change that stopped copying the network's member list into every member's input
(issue 19): the member input now names the run's roster (size and digest) and the
activities read it from the run, once per worker.

``MEMBERS_STATE`` names the files: ``members-listed`` on the code before the change
(each member's input and its steps' inputs carry ``networkMembers``),
``roster-by-reference`` after it, and ``record-first-by-input`` after the run started
telling its members to drain record-first (``run-member-record-first-by-input``: the
member asks no patch, so its history has no marker and no search-attribute upsert).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from temporalio.client import Client

from engine.domain.run import State, member_workflow_id
from tests.histories.record import record
from tests.runs.harness import Cluster, strategy
from tests.runs.test_drain_restore import drain_fleet, service_in, start_run

ONE_STAGE = [{"name": "all", "groups": [{"name": "all"}]}]


def _commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()


async def test_record_a_completed_run_of_members_reading_their_peers(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """Three members, one serving a global service: every step that reads peers runs."""
    state = os.environ.get("MEMBERS_STATE", "members-listed")
    clusters = [Cluster(name, group="all") for name in ("a-1", "a-2", "a-3")]
    async with drain_fleet(
        client, task_queue, state_dir, clusters, [service_in("a-1", "a-2")]
    ) as fleet:
        run = await start_run(fleet, strategy(ONE_STAGE))
        status = await run.result()
        assert status.state is State.COMPLETED, status.error
        note = (
            f"Recorded at {_commit()} by recorders_roster.py::"
            "test_record_a_completed_run_of_members_reading_their_peers "
            f"(MEMBERS_STATE={state}).\n\nA one-stage run of a-1, a-2, a-3; a-1 serves "
            "shop/checkout with a-2, so its drain, verify and restore read its peers."
        )
        await record(client, run.workflow_id, "UpdateRun", f"completed-{state}", note)
        member = member_workflow_id(fleet.network, status.run_id, "a-1")
        await record(client, member, "MemberUpdate", f"completed-{state}", note)
