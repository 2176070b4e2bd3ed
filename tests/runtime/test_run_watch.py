"""``meshfleet run watch`` and ``run status`` as text, for a person and for a log file."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from temporalio.client import Client

from engine.domain.run import GateState, State
from engine.runtime import devserver
from tests.runs.harness import Cluster, running_fleet, strategy, wait_until
from tests.runtime.serverproc import MESHFLEET

GATED = strategy(
    [
        {
            "name": "all",
            "beforeGates": [{"type": "Approval", "displayName": "go"}],
            "groups": [{"name": "all", "maxConcurrency": "1"}],
        }
    ]
)


async def start_cli(address: str, task_queue: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        MESHFLEET, "--address", address, *args,
        env={**os.environ, "MESHFLEET_TASK_QUEUE": task_queue, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def cli(address: str, task_queue: str, *args: str) -> tuple[int, str, str]:
    process = await start_cli(address, task_queue, *args)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_watch_without_a_terminal_prints_a_line_per_change_and_counts_skipped_apart(
    client: Client,
    temporal_server: devserver.EmbeddedServer,
    task_queue: str,
    state_dir: Path,
    tmp_path: Path,
) -> None:
    address = temporal_server.address
    strategy_file = tmp_path / "strategy.json"
    strategy_file.write_text(json.dumps(GATED))
    clusters = [
        Cluster("w-1", group="all"),
        Cluster("w-2", group="all"),
        Cluster("w-done", group="all", kubernetes="1.33.1"),
    ]
    async with running_fleet(client, task_queue, state_dir, clusters) as fleet:
        code, _, err = await cli(
            address, task_queue, "run", "start", "--network", fleet.network,
            "--strategy", str(strategy_file), "--target", "1.33", "--name", "watched",
        )  # fmt: skip
        assert code == 0, err
        ref = f"{fleet.network}/watched"
        watcher = await start_cli(address, task_queue, "run", "watch", ref)
        assert watcher.stdout is not None
        first = await asyncio.wait_for(watcher.stdout.readline(), timeout=30)
        assert f"run {ref}" in first.decode()
        run = await fleet_run(client, fleet.network)
        await wait_until(run, lambda s: any(g.state is GateState.PENDING for g in s.gates()))
        code, _, err = await cli(
            address, task_queue, "run", "approve", ref, "go", "--comment", "looks healthy"
        )
        assert code == 0, err
        rest, _ = await asyncio.wait_for(watcher.communicate(), timeout=60)
        shown = await cli(address, task_queue, "run", "status", ref)
    lines = (first + rest).decode().splitlines()
    assert watcher.returncode == 0, lines
    assert any("gate all/before/0: Pending" in line for line in lines), lines
    assert any("w-1: Completed" in line for line in lines), lines
    assert any("control approve gate all/before/0 by" in line for line in lines), lines
    assert lines[-1] == f"run {ref}: Completed, 2 completed, 1 skipped of 3 members"
    code, status_text, err = shown
    assert code == 0, err
    assert "looks healthy" in status_text
    assert "up to 1 member(s) at once" in status_text
    assert "2 completed, 1 skipped of 3 members" in status_text


async def fleet_run(client: Client, network: str):  # type: ignore[no-untyped-def]
    from engine.runtime.runs import find_run

    return await find_run(client, "watched", network)


async def test_a_stop_reason_shows_in_the_text_status(
    client: Client,
    temporal_server: devserver.EmbeddedServer,
    task_queue: str,
    state_dir: Path,
    tmp_path: Path,
) -> None:
    address = temporal_server.address
    strategy_file = tmp_path / "strategy.json"
    strategy_file.write_text(json.dumps(GATED))
    async with running_fleet(client, task_queue, state_dir, [Cluster("s-1", group="all")]) as fleet:
        ref = f"{fleet.network}/watched"
        code, _, err = await cli(
            address, task_queue, "run", "start", "--network", fleet.network,
            "--strategy", str(strategy_file), "--target", "1.33", "--name", "watched",
        )  # fmt: skip
        assert code == 0, err
        run = await fleet_run(client, fleet.network)
        await wait_until(run, lambda s: any(g.state is GateState.PENDING for g in s.gates()))
        code, _, err = await cli(
            address, task_queue, "run", "stop", ref, "--reason", "change freeze"
        )
        assert code == 0, err
        await wait_until(run, lambda s: s.state is State.STOPPED)
        code, out, err = await cli(address, task_queue, "run", "status", ref)
    assert code == 0, err
    assert "change freeze" in out
