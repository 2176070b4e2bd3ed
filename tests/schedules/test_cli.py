"""``meshfleet schedule ...`` end to end: the real CLI process, the session server, a worker."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from temporalio.client import Client

from engine.runtime import devserver
from tests.polling import eventually
from tests.runs.harness import Cluster, strategy
from tests.runtime.serverproc import MESHFLEET
from tests.schedules.test_schedules import site


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


async def meshfleet(
    server: devserver.EmbeddedServer, task_queue: str, state_dir: Path, *args: str
) -> Ran:
    env = {
        **os.environ,
        "MESHFLEET_TASK_QUEUE": task_queue,
        "MESHFLEET_STATE_DIR": str(state_dir),
        "COLUMNS": "160",
    }
    process = await asyncio.create_subprocess_exec(
        MESHFLEET,
        "--address",
        server.address,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=90)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


async def test_schedule_commands_create_list_show_pause_trigger_delete(
    client: Client,
    temporal_server: devserver.EmbeddedServer,
    task_queue: str,
    state_dir: Path,
    tmp_path: Path,
) -> None:
    strategy_file = tmp_path / "strategy.yaml"
    strategy_file.write_text(yaml.safe_dump(strategy([{"name": "all", "groups": [{"name": "g"}]}])))
    clusters = [Cluster("c0", group="g", kubernetes="1.36.1", cilium="1.18.9")]
    name = f"weekend-{uuid.uuid4().hex[:6]}"

    async def cli(*args: str) -> Ran:
        return await meshfleet(temporal_server, task_queue, state_dir, *args)

    async with site(client, task_queue, state_dir, clusters) as here:
        here.names.append(name)
        created = await cli(
            "schedule", "create", name, "--network", here.network,
            "--strategy", str(strategy_file), "--channel", "Rapid",
            "--days", "Sat,Sun", "--start", "02:00", "--timezone", "Europe/Berlin",
            "--duration", "4h", "--skip-date", "2031-12-27", "--no-start-run",
            "--output", "json",
        )  # fmt: skip
        assert created.code == 0, created.stderr
        document = created.json()
        assert isinstance(document, dict)
        assert document["profile"]["window"]["days"] == ["Saturday", "Sunday"]
        assert document["profile"]["startRun"] is False
        assert len(document["nextActionTimes"]) == 10

        # `schedule list` shows the next times (table and JSON).
        async def listed() -> Any:
            entries = (await cli("schedule", "list", "--output", "json")).json()
            assert isinstance(entries, list)
            return next((e for e in entries if e["profile"]["name"] == name), None)

        entry = await eventually(listed, what=f"schedule list to show {name}")
        first = dt.datetime.fromisoformat(entry["nextActionTimes"][0])
        assert first.astimezone(dt.UTC).hour in (0, 1)  # 02:00 Berlin, summer or winter
        table = await cli("schedule", "list")
        assert table.code == 0
        assert name in table.stdout
        assert f"{first.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC" in table.stdout

        paused = await cli("schedule", "pause", name, "--note", "freeze", "--output", "json")
        assert paused.code == 0, paused.stderr
        assert paused.json()["paused"] is True
        assert paused.json()["note"] == "freeze"
        assert (await cli("schedule", "unpause", name)).code == 0

        triggered = await cli("schedule", "trigger", name, "--output", "json")
        assert triggered.code == 0, triggered.stderr
        outcome = triggered.json()
        assert isinstance(outcome, dict)
        assert outcome["lastTriggerStatus"] == "NothingToDo"

        shown = await cli("schedule", "show", name)
        assert shown.code == 0
        assert "NothingToDo" in shown.stdout
        assert "Sat, Sun 02:00 Europe/Berlin for 4h" in shown.stdout

        assert (await cli("schedule", "delete", name)).code == 0
        missing = await cli("schedule", "show", name)
        assert missing.code == 1
        assert "does not exist" in missing.stderr


async def test_invalid_input_is_one_line_and_exit_2(
    temporal_server: devserver.EmbeddedServer, task_queue: str, state_dir: Path, tmp_path: Path
) -> None:
    strategy_file = tmp_path / "strategy.yaml"
    strategy_file.write_text(yaml.safe_dump(strategy([{"name": "all", "groups": [{"name": "g"}]}])))
    base = ["schedule", "create", "p", "--network", "n", "--strategy", str(strategy_file)]
    cases = {
        "timeZone": ["--channel", "Rapid", "--days", "Sat", "--start", "02:00",
                     "--timezone", "Mars/Olympus", "--duration", "4h"],
        "--duration": ["--channel", "Rapid", "--days", "Sat", "--start", "02:00",
                       "--duration", "30h"],
        "days": ["--channel", "Rapid", "--days", "Caturday", "--start", "02:00",
                 "--duration", "4h"],
        "targetKubernetesVersion": ["--channel", "TargetKubernetesVersion", "--days", "Sat",
                                    "--start", "02:00", "--duration", "4h"],
    }  # fmt: skip
    for field, args in cases.items():
        ran = await meshfleet(temporal_server, task_queue, state_dir, *base, *args)
        assert ran.code == 2, (field, ran.stderr)
        assert field in ran.stderr, ran.stderr
