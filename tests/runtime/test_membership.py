"""One source of truth for membership: the network workflows; the fleet file only describes.

``sim load`` leaves every cluster unmeshed and prints the ``network create``
commands for the networks the file describes; ``sim show`` and ``network
show`` then agree. A ``network create`` whose every member is rejected leaves
nothing behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path

import yaml
from temporalio.client import Client

from activities.backends.simulated import SimulatedFleetBackend
from engine.runtime import devserver
from engine.runtime.worker import build_worker
from tests.runs.harness import Cluster, fleet_document
from tests.runtime.serverproc import MESHFLEET

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class Shell:
    """The CLI as a person runs it: one state directory, one task queue, one server."""

    def __init__(self, address: str, task_queue: str, state_dir: Path) -> None:
        self.env = {
            **os.environ,
            "MESHFLEET_TASK_QUEUE": task_queue,
            "MESHFLEET_STATE_DIR": str(state_dir),
            "COLUMNS": "200",
        }
        self.address = address

    async def __call__(self, *args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            MESHFLEET, "--address", self.address, *args, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), timeout=90)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()


async def test_a_loaded_fleet_is_unmeshed_and_a_created_network_is_what_sim_and_network_show(
    client: Client, temporal_server: devserver.EmbeddedServer, task_queue: str, state_dir: Path
) -> None:
    sh = Shell(temporal_server.address, task_queue, state_dir)
    code, loaded, err = await sh("sim", "load", str(EXAMPLES / "fleet.yaml"))
    assert code == 0, err
    assert "meshfleet network create prod-mesh --member eu-west-1 --member eu-west-2" in loaded
    code, shown, err = await sh("sim", "show", "--output", "json")
    assert code == 0, err
    assert {c["network"] for c in json.loads(shown)["clusters"]} == {None}

    lab = f"lab-{uuid.uuid4().hex[:6]}"
    async with build_worker(client, task_queue, backend=SimulatedFleetBackend(state_dir)):
        created = await sh("network", "create", lab, "--member", "ap-east-1")
        joined = await sh("network", "join", lab, "--member", "ap-south-1", "--output", "json")
        network = await sh("network", "show", lab, "--output", "json")
        simulated = await sh("sim", "show", "--output", "json")
        await sh("network", "delete", lab, "--force")
    assert created[0] == 0, created
    assert joined[0] == 0, joined
    assert [m["cluster"] for m in json.loads(joined[1])["members"]] == ["ap-south-1"]
    members = sorted(m["name"] for m in json.loads(network[1])["members"])
    assert members == ["ap-east-1", "ap-south-1"]
    in_lab = sorted(c["name"] for c in json.loads(simulated[1])["clusters"] if c["network"] == lab)
    assert in_lab == members


async def test_a_create_whose_every_member_is_rejected_creates_nothing_and_exits_2(
    client: Client,
    temporal_server: devserver.EmbeddedServer,
    task_queue: str,
    state_dir: Path,
    tmp_path: Path,
) -> None:
    sh = Shell(temporal_server.address, task_queue, state_dir)
    fleet_file = tmp_path / "fleet.yaml"
    clusters = [Cluster("old-1", kubernetes="1.31.4", cilium="1.16.16"), Cluster("new-1")]
    fleet_file.write_text(yaml.safe_dump(fleet_document(clusters)), encoding="utf-8")
    assert (await sh("sim", "load", str(fleet_file)))[0] == 0
    name = f"lab-{uuid.uuid4().hex[:6]}"
    async with build_worker(client, task_queue, backend=SimulatedFleetBackend(state_dir)):
        refused = await sh("network", "create", name, "--member", "old-1")
        shown = await sh("network", "show", name)
        again = await sh("network", "create", name, "--member", "new-1")
        await sh("network", "delete", name, "--force")
    code, out, err = refused
    assert code == 2, out + err
    assert "old-1" in out
    assert "was not created" in err
    assert shown[0] != 0
    assert again[0] == 0, again
