"""Record, on b8192e8 (before the Degraded re-check), a network that ends Degraded and joins again.

Not collected by the suite. It was run from a temporary worktree of b8192e8
(``git worktree add /tmp/b8192e8 b8192e8``, copied to its ``tests/network/``,
then ``GOLDEN_NETWORK_DIR=<this folder>/Network PYTHONPATH=/tmp/b8192e8 .venv/bin/python -m pytest
tests/network/record_b8192e8.py``) and wrote
``Network/degraded-then-joined-b8192e8.json``: the history issue 15's upgrade
could not replay.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from temporalio.client import Client

from activities.backends.simulated import SimulatedFleetBackend
from engine.domain.fleet import Fault, FaultKind, FaultTrigger
from engine.domain.network import NetworkStatus, network_workflow_id
from engine.runtime.client import MeshfleetClient, default_network_settings
from tests.network.conftest import cluster, fleet, network_worker

#: Where to write (the worktree being recorded in is not the one that keeps the history).
TARGET = Path(os.environ.get("GOLDEN_NETWORK_DIR", Path(__file__).parent / "Network"))


def _commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


async def test_record_degraded_then_joined_on_b8192e8(
    client: Client, task_queue: str, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHFLEET_MESH_READY_TIMEOUT", "3s")
    backend = SimulatedFleetBackend(state_dir)
    backend.load(fleet([cluster("a", 1), cluster("b", 2), cluster("cut", 3), cluster("late", 4)]))
    meshfleet = MeshfleetClient(client, task_queue=task_queue)
    name = "degraded-b8192e8"
    settings = default_network_settings()  # as `meshfleet network create` does on b8192e8
    assert settings.mesh_ready_timeout.total_seconds() == 3
    async with network_worker(client, task_queue, backend):
        await meshfleet.create_network(name, ["a", "b"], settings=settings)
        backend.add_fault("cut", Fault(kind=FaultKind.MESH_PARTITION, on=FaultTrigger.JOIN))
        joined = await meshfleet.join(name, ["cut"])
        assert joined.status is NetworkStatus.DEGRADED
        # Idle and Degraded past 1s (the re-check interval today's tests use), then a join.
        await asyncio.sleep(2)
        assert (await meshfleet.describe_network(name)).status is NetworkStatus.DEGRADED
        again = await meshfleet.join(name, ["late"])
        assert [m.outcome.value for m in again.members] == ["joined"]
        described = await meshfleet.describe_network(name)
        assert [m.name for m in described.members] == ["a", "b", "cut", "late"]
        handle = client.get_workflow_handle(network_workflow_id(name))
        history = await handle.fetch_history()
        await handle.terminate("recorded")
    commit = _commit()
    (TARGET / "degraded-then-joined-b8192e8.json").write_text(history.to_json())
    (TARGET / "degraded-then-joined-b8192e8.md").write_text(
        f"Recorded at {commit} (before 036ed40 added the Degraded re-check timer) by a recorder\n"
        "run in a temporary worktree of that commit: MESHFLEET_MESH_READY_TIMEOUT=3s, a network\n"
        "of a and b, `cut` joins behind a meshPartition fault (the network ends Degraded), it\n"
        "stays idle for 2s, then `late` joins. The reproduction of issue 15: 036ed40's code\n"
        "fails it with a nondeterminism error (a timer where the history has the next update).\n"
    )
