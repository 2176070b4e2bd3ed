"""``meshfleet plan --network`` and ``run start``: the live network's plan, checked before a start.

The CLI runs as a separate process against the session server; a worker in
this process serves the test's task queue on a simulated fleet in which the
network holds only some of the clusters.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

from temporalio.client import Client

from activities.backends.simulated import SimulatedFleetBackend
from engine.domain.fleet import parse_fleet
from engine.runtime import devserver
from engine.runtime.client import MeshfleetClient
from engine.runtime.runs import list_runs
from engine.runtime.worker import build_worker
from tests.runs.harness import Cluster, create_network, fleet_document, strategy
from tests.runtime.serverproc import MESHFLEET


async def meshfleet(address: str, task_queue: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESHFLEET_TASK_QUEUE": task_queue}
    return await asyncio.to_thread(
        subprocess.run,
        [MESHFLEET, "--address", address, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
    )


def write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


ONE_GROUP = strategy([{"name": "all", "groups": [{"name": "all"}]}])
CLUSTERS = [
    Cluster("in-1", group="all", kubernetes="1.32.6"),
    Cluster("in-2", group="all", kubernetes="1.32.7"),
    Cluster("outside-1", group="all"),
]


class Site:
    """A simulated fleet, a worker, and a network of only ``in-1`` and ``in-2``."""

    def __init__(self, client: Client, address: str, task_queue: str, tmp: Path) -> None:
        self.client = client
        self.address = address
        self.task_queue = task_queue
        self.tmp = tmp
        self.network = f"net-{uuid.uuid4().hex[:8]}"

    async def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return await meshfleet(self.address, self.task_queue, *args)

    def strategy_file(self, document: dict[str, Any], name: str = "strategy.json") -> str:
        return str(write(self.tmp / name, document))

    async def runs(self) -> list[str]:
        return [r.name for r in await list_runs(self.client, self.network)]


def load(state_dir: Path, services: list[dict[str, Any]] | None = None) -> SimulatedFleetBackend:
    backend = SimulatedFleetBackend(state_dir)
    backend.load(parse_fleet(fleet_document(CLUSTERS, services or [])))
    return backend


async def test_plan_network_plans_the_networks_members_at_their_real_versions(
    client: Client,
    temporal_server: devserver.EmbeddedServer,
    task_queue: str,
    state_dir: Path,
    tmp_path: Path,
) -> None:
    site = Site(client, temporal_server.address, task_queue, tmp_path)
    async with build_worker(client, task_queue, backend=load(state_dir)):
        await create_network(client, task_queue, site.network, ["in-1", "in-2"])
        shown = await site.cli(
            "plan", "--network", site.network, "--strategy", site.strategy_file(ONE_GROUP),
            "--target", "1.33", "-o", "json",
        )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    members = {m["name"]: m for s in document["stages"] for g in s["groups"] for m in g["members"]}
    assert set(members) == {"in-1", "in-2"}
    assert members["in-2"]["from"]["kubernetesVersion"] == "1.32.7"
    assert document["undrainable"] == []


async def test_run_start_refuses_a_plan_the_rules_refuse_listing_every_problem_and_starts_nothing(
    client: Client,
    temporal_server: devserver.EmbeddedServer,
    task_queue: str,
    state_dir: Path,
    tmp_path: Path,
) -> None:
    site = Site(client, temporal_server.address, task_queue, tmp_path)
    # in-1 is in no group and in-2 is in two.
    broken = strategy(
        [
            {"name": "one", "groups": [{"name": "a", "members": ["in-2"]}]},
            {"name": "two", "groups": [{"name": "b", "members": ["in-2"]}]},
        ]
    )
    async with build_worker(client, task_queue, backend=load(state_dir)):
        await create_network(client, task_queue, site.network, ["in-1", "in-2"])
        bad_target = await site.cli(
            "run", "start", "--network", site.network, "--strategy", site.strategy_file(ONE_GROUP),
            "--target", "1.40", "--name", "bad-target",
        )  # fmt: skip
        bad_groups = await site.cli(
            "run", "start", "--network", site.network, "--strategy", site.strategy_file(broken),
            "--target", "1.33", "--name", "bad-groups", "--output", "json",
        )  # fmt: skip
        started = await site.runs()
    assert bad_target.returncode == 2, bad_target.stdout + bad_target.stderr
    assert "no Kubernetes 1.40" in bad_target.stderr
    assert "Traceback" not in bad_target.stderr
    assert bad_groups.returncode == 2, bad_groups.stdout + bad_groups.stderr
    messages = " | ".join(e["message"] for e in json.loads(bad_groups.stdout)["errors"])
    assert "'in-1' is in no group" in messages
    assert "in-2" in messages
    assert "outside-1" not in messages
    assert started == []


async def test_run_start_dry_run_prints_the_plan_and_starts_nothing(
    client: Client,
    temporal_server: devserver.EmbeddedServer,
    task_queue: str,
    state_dir: Path,
    tmp_path: Path,
) -> None:
    site = Site(client, temporal_server.address, task_queue, tmp_path)
    async with build_worker(client, task_queue, backend=load(state_dir)):
        await create_network(client, task_queue, site.network, ["in-1", "in-2"])
        dry = await site.cli(
            "run", "start", "--network", site.network, "--strategy", site.strategy_file(ONE_GROUP),
            "--target", "1.33", "--name", "dry", "--dry-run",
        )  # fmt: skip
        started = await site.runs()
    assert dry.returncode == 0, dry.stderr
    assert "Stage all" in dry.stdout
    assert "in-1" in dry.stdout
    assert "plan hash:" in dry.stdout
    assert started == []


ONLY_IN_1 = [
    {"namespace": "shop", "name": "ledger", "clusters": {"in-1": 3}, "minReadyEndpoints": 1}
]


async def test_an_undrainable_member_is_flagged_and_refused_unless_the_strategy_opts_out(
    client: Client,
    temporal_server: devserver.EmbeddedServer,
    task_queue: str,
    state_dir: Path,
    tmp_path: Path,
) -> None:
    site = Site(client, temporal_server.address, task_queue, tmp_path)
    opted_out = strategy(
        [{"name": "all", "groups": [{"name": "all"}]}], allowUndrainableMembers=True
    )
    async with build_worker(client, task_queue, backend=load(state_dir, ONLY_IN_1)):
        await create_network(client, task_queue, site.network, ["in-1", "in-2"])
        shown = await site.cli(
            "plan", "--network", site.network, "--strategy", site.strategy_file(ONE_GROUP),
            "--target", "1.33",
        )  # fmt: skip
        refused = await site.cli(
            "run", "start", "--network", site.network, "--strategy", site.strategy_file(ONE_GROUP),
            "--target", "1.33", "--name", "refused",
        )  # fmt: skip
        allowed = await site.cli(
            "run", "start", "--network", site.network,
            "--strategy", site.strategy_file(opted_out, "opted-out.json"),
            "--target", "1.33", "--name", "allowed", "--output", "json",
        )  # fmt: skip
        started = await site.runs()
        for name in started:
            await client.get_workflow_handle(f"updaterun/{site.network}/{name}").terminate("done")
    assert shown.returncode == 0, shown.stderr
    assert "never drainable" in shown.stdout
    assert "'in-1' can never be drained" in shown.stdout
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "shop/ledger" in refused.stderr
    assert "allowUndrainableMembers" in refused.stderr
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["ref"] == f"{site.network}/allowed"
    assert started == ["allowed"]


async def test_plan_network_without_a_worker_says_no_worker_polls_the_task_queue(
    client: Client,
    temporal_server: devserver.EmbeddedServer,
    task_queue: str,
    state_dir: Path,
    tmp_path: Path,
) -> None:
    site = Site(client, temporal_server.address, task_queue, tmp_path)
    async with build_worker(client, task_queue, backend=load(state_dir)):
        await create_network(client, task_queue, site.network, ["in-1"])
    lonely = f"{task_queue}-nobody"
    shown = await meshfleet(
        site.address, lonely, "plan", "--network", site.network,
        "--strategy", site.strategy_file(ONE_GROUP), "--target", "1.33",
    )  # fmt: skip
    await client.get_workflow_handle(f"network/{site.network}").terminate("done")
    assert shown.returncode != 0
    assert f"no worker polls task queue {lonely!r}" in shown.stderr


async def test_run_start_on_a_network_with_no_members_is_refused_with_exit_2(
    client: Client,
    temporal_server: devserver.EmbeddedServer,
    task_queue: str,
    state_dir: Path,
    tmp_path: Path,
) -> None:
    site = Site(client, temporal_server.address, task_queue, tmp_path)
    async with build_worker(client, task_queue, backend=load(state_dir)):
        await MeshfleetClient(client, task_queue=task_queue).create_network(site.network)
        refused = await site.cli(
            "run", "start", "--network", site.network, "--strategy", site.strategy_file(ONE_GROUP),
            "--target", "1.33", "--name", "empty",
        )  # fmt: skip
        started = await site.runs()
        await client.get_workflow_handle(f"network/{site.network}").terminate("done")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"network {site.network!r} has no members" in refused.stderr
    assert started == []
