"""Staged update runs on the simulated fleet: order, concurrency, budgets, gates, controls."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client

from engine.domain.run import State
from engine.domain.versions import Version
from tests.runs.harness import Cluster, running_fleet, strategy

THREE_STAGE_CLUSTERS = [
    Cluster("canary-1", group="canary"),
    Cluster("eu-1", group="eu"),
    Cluster("eu-2", group="eu"),
    Cluster("us-1", group="us"),
    Cluster("us-2", group="us"),
    Cluster("rest-1", group="rest"),
]


async def test_a_two_member_run_completes_with_every_member_at_the_target(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    clusters = [Cluster("alpha", group="all"), Cluster("beta", group="all")]
    async with running_fleet(client, task_queue, state_dir, clusters) as fleet:
        run = await fleet.start_run(
            strategy([{"name": "all", "groups": [{"name": "all", "maxConcurrency": "1"}]}])
        )
        status = await run.result()
        assert status.state is State.COMPLETED, status.error
        for name in ("alpha", "beta"):
            member = status.member(name)
            assert member is not None
            assert member.state is State.COMPLETED, member.message
        described = [await fleet.backend.describe_member(n) for n in ("alpha", "beta")]
        assert [str(Version.parse(d.kubernetes_version).minor_version) for d in described] == [
            "1.33",
            "1.33",
        ]
        assert {d.cilium_version for d in described} == {"1.17.9"}  # 1.33 bundles Cilium 1.17.9
        assert status.plan_hash
