"""The README's examples are true: its Python client script runs against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from activities.backends.simulated import SimulatedFleetBackend
from engine.runtime import devserver
from engine.runtime.client import MeshfleetClient
from engine.runtime.connection import ConnectionSettings, connect_client
from engine.runtime.fleet_file import load_fleet
from engine.runtime.worker import build_worker

REPO = Path(__file__).resolve().parents[2]


def readme_python_block(section: str) -> str:
    text = (REPO / "README.md").read_text()
    after = text.split(f"## {section}", 1)[1]
    match = re.search(r"```python\n(.*?)```", after, re.DOTALL)
    assert match, f"no python block under '## {section}'"
    return match.group(1)


async def test_the_python_client_example_in_the_readme_runs_a_real_update(
    tmp_path: Path, task_queue: str
) -> None:
    script = tmp_path / "upgrade.py"
    script.write_text(readme_python_block("The Python client"))
    strategy = tmp_path / "strategy.json"
    strategy.write_text(
        json.dumps(
            {
                "apiVersion": "meshfleet.io/v1alpha1",
                "kind": "UpdateStrategy",
                "metadata": {"name": "readme"},
                "spec": {
                    "stages": [
                        {
                            "name": "all",
                            "beforeGates": [{"type": "Approval", "displayName": "go"}],
                            "groups": [{"name": "all", "members": ["eu-west-1", "us-east-1"]}],
                        }
                    ]
                },
            }
        )
    )
    # The example fleet, fast and with no maintenance windows, so the run needs no waiting.
    fleet = load_fleet(REPO / "examples" / "fleet.yaml")
    clusters = [
        c.model_copy(update={"maintenance_window": None})
        for c in fleet.spec.clusters
        if c.name in ("eu-west-1", "us-east-1")
    ]
    spec = fleet.spec.model_copy(
        update={"time_scale": 0.0005, "clusters": clusters, "networks": [], "global_services": []}
    )
    state = tmp_path / "state"
    state.mkdir()
    backend = SimulatedFleetBackend(state)
    backend.load(fleet.model_copy(update={"spec": spec}))

    server = await devserver.start_embedded_server(
        tmp_path / "temporal", grpc_port=None, ui_port=None, ui=False
    )
    try:
        client = await connect_client(server.address, ConnectionSettings(address=server.address))
        async with build_worker(client, task_queue, backend=backend):
            meshfleet = MeshfleetClient(client, task_queue=task_queue)
            await meshfleet.create_network("prod-mesh", ["eu-west-1", "us-east-1"])
            env = {
                **os.environ,
                "TEMPORAL_ADDRESS": server.address,
                "MESHFLEET_TASK_QUEUE": task_queue,
            }
            result = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, str(script), str(strategy)],
                capture_output=True,
                text=True,
                env=env,
                cwd=REPO,
                timeout=120,
            )
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert "Connected members: eu-west-1, us-east-1" in result.stdout
    assert "final: Completed" in result.stdout
    assert "2/2 members finished" in result.stdout
