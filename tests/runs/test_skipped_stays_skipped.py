"""A skipped stage stays skipped: a gate read that breaks after the skip cannot fail it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio.client import Client

from engine.domain.run import SkipTargetType, State
from tests.runs.harness import running_fleet
from tests.runs.held_mesh_read import CHAIN, CHAIN_CLUSTERS, MeshReadHeldThenBroken


async def test_a_gate_read_that_breaks_after_its_stage_was_skipped_leaves_the_stage_skipped(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    mesh = MeshReadHeldThenBroken(held_call=2)  # 1: before stage first, 2: after it
    async with running_fleet(
        client, task_queue, state_dir, CHAIN_CLUSTERS, replaced=[mesh.check_mesh_health]
    ) as fleet:
        run = await fleet.start_run(CHAIN)
        await asyncio.wait_for(mesh.entered.wait(), timeout=60)
        skipped = await run.skip([(SkipTargetType.STAGE, "first")], reason="enough of it")
        assert skipped.stages[0].state is State.SKIPPED
        mesh.release.set()
        done = await run.result()
        assert [s.state for s in done.stages] == [State.SKIPPED, State.COMPLETED], done.error
        assert done.state is State.COMPLETED, done.error
        second = done.member("s-1")
        assert second is not None
        assert second.state is State.COMPLETED
