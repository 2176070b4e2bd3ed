"""Recorders of an update run whose member's restore could not complete: run by hand.

    .venv/bin/python -m pytest tests/histories/recorders_left_drained.py

Like ``recorders.py``: the recorder drives a run into one state on the code of
the commit it names and writes its history with ``record``. It guards the change
that makes the run report a member left drained (``report-left-drained`` patch in
``workflows/update_run.py``): a run recorded before it replays without the report.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

from temporalio.client import Client

from engine.domain.run import State
from tests.histories.record import record
from tests.runs.harness import Cluster, strategy
from tests.runs.test_drain_restore import FAST, drain_fleet, service_in, start_run

ONE_STAGE = [{"name": "all", "groups": [{"name": "all"}]}]


def _commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()


async def test_record_a_run_whose_member_was_left_drained(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """a-1's control plane fails and its API stays away past the restore timeout."""
    faults = [
        {"kind": "fail", "on": "controlPlaneUpgrade", "message": "upgrade broke"},
        {"kind": "apiUnavailable", "on": "controlPlaneUpgrade"},
    ]
    clusters = [Cluster("a-1", group="all", faults=faults), Cluster("a-2", group="all")]
    timings = FAST.model_copy(
        update={
            "control_plane_timeout": dt.timedelta(seconds=2),
            "restore_timeout": dt.timedelta(seconds=3),
        }
    )
    async with drain_fleet(
        client, task_queue, state_dir, clusters, [service_in("a-1", "a-2")]
    ) as fleet:
        run = await start_run(fleet, strategy(ONE_STAGE), timings)
        status = await run.result()
        assert status.state is State.FAILED, status.state
        member = status.member("a-1")
        assert member is not None
        assert member.message is not None
        assert member.message.startswith("LEFT DRAINED: a-1 ")
        await record(
            client,
            run.workflow_id,
            "UpdateRun",
            "failed-member-left-drained",
            f"Recorded at {_commit()} by recorders_left_drained.py::"
            "test_record_a_run_whose_member_was_left_drained.\n\n"
            "Before report-left-drained: member a-1's restore could not complete (LEFT "
            "DRAINED on shop/checkout); the run failed without reporting it to the network.",
        )
