"""``meshfleet run`` from a shell: list, status, approve, and refusals as one line + exit 2."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

from temporalio.client import Client

from engine.domain.run import GateState, State
from engine.runtime import devserver
from engine.runtime.runs import find_run
from tests.runs.harness import Cluster, running_fleet, strategy, wait_until
from tests.runtime.serverproc import MESHFLEET


async def meshfleet(address: str, task_queue: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESHFLEET_TASK_QUEUE": task_queue}
    return await asyncio.to_thread(
        subprocess.run,
        [MESHFLEET, "--address", address, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


async def test_run_commands_list_show_and_approve_a_gated_run(
    client: Client,
    temporal_server: devserver.EmbeddedServer,
    task_queue: str,
    state_dir: Path,
    tmp_path: Path,
) -> None:
    document = strategy(
        [
            {
                "name": "all",
                "beforeGates": [{"type": "Approval", "displayName": "go"}],
                "groups": [{"name": "all", "maxConcurrency": "2"}],
            }
        ]
    )
    strategy_file = tmp_path / "strategy.json"
    strategy_file.write_text(json.dumps(document))
    address = temporal_server.address
    clusters = [Cluster("cli-1", group="all"), Cluster("cli-2", group="all")]
    async with running_fleet(client, task_queue, state_dir, clusters) as fleet:
        started = await meshfleet(
            address, task_queue, "run", "start", "--network", fleet.network,
            "--strategy", str(strategy_file), "--target", "1.33", "--name", "cli-run",
            "--output", "json",
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        ref = json.loads(started.stdout)["ref"]
        assert ref == f"{fleet.network}/cli-run"
        run = await find_run(client, "cli-run", fleet.network)
        await wait_until(run, lambda s: any(g.state is GateState.PENDING for g in s.gates()))

        shown = await meshfleet(address, task_queue, "run", "status", ref)
        assert shown.returncode == 0, shown.stderr
        assert "all/before/0" in shown.stdout
        assert "cli-1" in shown.stdout

        listed = await meshfleet(
            address, task_queue, "run", "list", "--network", fleet.network, "--output", "json"
        )
        assert listed.returncode == 0, listed.stderr
        # The same key as `run status`: runId is the run's name; ref is what commands take.
        assert [(r["runId"], r["ref"]) for r in json.loads(listed.stdout)] == [("cli-run", ref)]

        refused = await meshfleet(address, task_queue, "run", "approve", ref, "no-such-gate")
        assert refused.returncode == 2
        assert "no gate 'no-such-gate'" in refused.stderr
        assert "Traceback" not in refused.stderr

        approved = await meshfleet(
            address, task_queue, "run", "approve", ref, "go", "--comment", "looks good"
        )
        assert approved.returncode == 0, approved.stderr
        assert "approve" in approved.stdout
        final = await run.result()
        assert final.state is State.COMPLETED

        unknown = await meshfleet(address, task_queue, "run", "status", f"{fleet.network}/nope")
        assert unknown.returncode == 1
        assert "does not exist" in unknown.stderr


async def test_a_run_on_a_network_without_members_is_refused_at_start_with_exit_2(
    client: Client,
    temporal_server: devserver.EmbeddedServer,
    task_queue: str,
    tmp_path: Path,
) -> None:
    import datetime as dt
    import uuid

    from engine.domain.network import NETWORK_WORKFLOW, NetworkInput, NetworkSettings
    from engine.domain.network import network_workflow_id as network_id
    from engine.runtime.worker import build_worker

    strategy_file = tmp_path / "strategy.json"
    strategy_file.write_text(json.dumps(strategy([{"name": "all", "groups": [{"name": "all"}]}])))
    network = f"empty-{uuid.uuid4().hex[:8]}"
    async with build_worker(client, task_queue):
        await client.start_workflow(
            NETWORK_WORKFLOW,
            arg=NetworkInput(
                name=network,
                settings=NetworkSettings(mesh_ready_timeout=dt.timedelta(seconds=30)),
            ),
            id=network_id(network),
            task_queue=task_queue,
        )
        refused = await meshfleet(
            temporal_server.address, task_queue, "run", "start", "--network", network,
            "--strategy", str(strategy_file), "--target", "1.33", "--name", "nothing",
        )  # fmt: skip
        assert refused.returncode == 2, refused.stderr
        assert f"network {network!r} has no members" in refused.stderr
        assert "Traceback" not in refused.stderr
        listed = [
            e.id async for e in client.list_workflows(f'WorkflowId = "updaterun/{network}/nothing"')
        ]
        assert listed == [], "a run was started on an empty network"
