"""Recorders of the update run's golden histories for the small fixes of issues 14/18/20.

    .venv/bin/python -m pytest tests/histories/recorders_small.py -k NAME -p no:cacheprovider

Like ``recorders_run.py``: run by hand on the code before a change, never collected
by the suite.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio.client import Client

from engine.domain.run import SkipTargetType, State
from tests.histories.record import record
from tests.histories.recorders import _commit
from tests.runs.harness import running_fleet
from tests.runs.held_mesh_read import (
    CHAIN,
    CHAIN_CLUSTERS,
    MeshReadHeldThenBroken,
)


async def test_record_a_skipped_stage_whose_after_gate_read_broke(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    mesh = MeshReadHeldThenBroken(held_call=2)
    async with running_fleet(
        client, task_queue, state_dir, CHAIN_CLUSTERS, replaced=[mesh.check_mesh_health]
    ) as fleet:
        run = await fleet.start_run(CHAIN)
        await asyncio.wait_for(mesh.entered.wait(), timeout=60)
        await run.skip([(SkipTargetType.STAGE, "first")], reason="enough of it")
        mesh.release.set()
        done = await run.result()
        assert done.state is State.FAILED
        await record(
            client,
            run.workflow_id,
            "UpdateRun",
            "skipped-stage-gate-broke",
            f"Recorded at {_commit()} by recorders_small.py::"
            "test_record_a_skipped_stage_whose_after_gate_read_broke.\n\n"
            "Stage `first` skipped while its after-stage mesh-health read was in flight; the "
            "read then failed for good. Before the fix the skipped stage was overwritten "
            "Failed and the run Failed (lingering); replays must keep doing so.",
        )
