"""Recorders of golden histories: run by hand, never collected by the suite.

    .venv/bin/python -m pytest tests/histories/recorders.py -k NAME

pytest collects this file only when it is named on the command line (it does
not match ``test_*.py``). Each recorder drives the workflows into one state on
today's code and writes the history with ``record``; commit the JSON and its
note together, on the commit *before* the workflow change they guard.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

from temporalio.client import Client

from engine.domain.network import network_workflow_id
from engine.domain.run import State
from engine.runtime.runs import UpdateRunHandle
from tests.histories.record import record
from tests.runs.harness import Cluster, Fleet, running_fleet, strategy


def _commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()


@contextlib.asynccontextmanager
async def _two_stage_run_completed(
    client: Client, task_queue: str, state_dir: Path
) -> AsyncIterator[tuple[Fleet, UpdateRunHandle]]:
    """A network of two members, a-1 and b-1, and a run of two one-member stages (a, then b)
    completed on today's code; the fleet's worker still runs while the caller records."""
    clusters = [Cluster("a-1", group="a"), Cluster("b-1", group="b")]
    plan = strategy(
        [{"name": "a", "groups": [{"name": "a"}]}, {"name": "b", "groups": [{"name": "b"}]}]
    )
    async with running_fleet(client, task_queue, state_dir, clusters) as fleet:
        run = await fleet.start_run(plan)
        status = await run.result()
        assert status.state is State.COMPLETED, status.error
        yield fleet, run


async def test_record_a_completed_two_stage_run(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """Network created and joined, a two-stage run completed, one member's child completed."""
    async with _two_stage_run_completed(client, task_queue, state_dir) as (fleet, run):
        note = f"Recorded at {_commit()} by recorders.py::test_record_a_completed_two_stage_run."
        await record(client, run.workflow_id, "UpdateRun", "completed-two-stages", note)
        await record(client, f"{run.workflow_id}/member/a-1", "MemberUpdate", "completed", note)
        await record(
            client, network_workflow_id(fleet.network), "Network", "joined-and-released", note
        )


async def test_record_a_run_whose_members_carry_their_cluster(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """h-ops: a run since the member-search-attribute patch (its marker is in the history)."""
    clusters = [Cluster("a-1", group="a")]
    plan = strategy([{"name": "a", "groups": [{"name": "a"}]}])
    async with running_fleet(client, task_queue, state_dir, clusters) as fleet:
        run = await fleet.start_run(plan)
        status = await run.result()
        assert status.state is State.COMPLETED, status.error
        note = (
            f"Recorded at {_commit()} (plus the member-search-attribute patch) by "
            "recorders.py::test_record_a_run_whose_members_carry_their_cluster."
        )
        await record(client, run.workflow_id, "UpdateRun", "completed-member-attribute", note)


async def test_record_a_run_whose_plan_is_recorded(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """A completed two-stage run on the code that computes its plan in an activity."""
    async with _two_stage_run_completed(client, task_queue, state_dir) as (_fleet, run):
        note = (
            f"Recorded at {_commit()} (plus the run-plan-recorded patch) by "
            "recorders.py::test_record_a_run_whose_plan_is_recorded: the plan is the "
            "compute_plan activity's recorded result."
        )
        await record(client, run.workflow_id, "UpdateRun", "completed-plan-recorded", note)


async def test_record_a_run_checking_after_each_stage_at_once(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """A completed two-stage run whose mesh and endpoints checks after each stage were
    scheduled in one workflow task (``run-after-checks-together``)."""
    async with _two_stage_run_completed(client, task_queue, state_dir) as (_fleet, run):
        note = (
            f"Recorded at {_commit()} by "
            "recorders.py::test_record_a_run_checking_after_each_stage_at_once: after each "
            "stage, check_mesh_health and service_endpoints are scheduled together."
        )
        await record(client, run.workflow_id, "UpdateRun", "completed-after-checks-together", note)


async def test_record_a_run_whose_second_stage_took_the_check_after_the_first(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """A completed two-stage run whose second stage took the healthy mesh check after the
    first as its check before (``run-before-check-reuses-after``)."""
    async with _two_stage_run_completed(client, task_queue, state_dir) as (_fleet, run):
        note = (
            f"Recorded at {_commit()} by "
            "recorders.py::test_record_a_run_whose_second_stage_took_the_check_after_the_first: "
            "no check_mesh_health before stage b; the check after stage a stands for it."
        )
        await record(client, run.workflow_id, "UpdateRun", "completed-before-check-reused", note)
