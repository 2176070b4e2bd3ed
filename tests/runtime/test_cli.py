"""The CLI's own commands and its error contract: one clear line, non-zero exit, no traceback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid

from temporalio.client import Client

from engine.domain.health import HEALTH_CHECK_WORKFLOW, HealthCheckInput, HealthReport
from engine.runtime import devserver
from engine.runtime.worker import build_worker
from tests.runtime.serverproc import MESHFLEET


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MESHFLEET, *args], capture_output=True, text=True, timeout=60)


def test_version_prints_meshfleet_and_sdk_versions() -> None:
    result = run_cli("version")
    assert result.returncode == 0
    assert result.stdout.startswith("meshfleet ")
    assert "temporalio 1.35" in result.stdout


def test_a_malformed_address_is_one_line_and_exit_code_two() -> None:
    result = run_cli("--address", "not-an-address", "healthcheck")
    assert result.returncode == 2
    assert "address" in result.stderr
    assert "HOST:PORT" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_an_unreachable_server_is_one_line_and_a_non_zero_exit() -> None:
    port = devserver.free_port()
    result = run_cli("--address", f"127.0.0.1:{port}", "healthcheck")
    assert result.returncode == 1
    assert f"cannot reach Temporal at 127.0.0.1:{port}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_healthcheck_with_no_worker_on_the_task_queue_fails_and_says_so(
    temporal_server: devserver.EmbeddedServer, task_queue: str
) -> None:
    result = run_cli(
        "--address", temporal_server.address, "healthcheck", "--task-queue", task_queue
    )
    assert result.returncode == 1, result.stdout
    assert f"no worker polls task queue {task_queue!r}" in result.stderr
    assert "Traceback" not in result.stderr


async def test_healthcheck_answers_from_a_worker_on_the_queue_and_counts_the_pollers(
    temporal_server: devserver.EmbeddedServer, client: Client, task_queue: str
) -> None:
    async with build_worker(client, task_queue):
        # The worker polls as soon as it runs; Temporal lists it once it has polled.
        await client.execute_workflow(
            HEALTH_CHECK_WORKFLOW,
            HealthCheckInput(),
            id=f"healthcheck/{uuid.uuid4().hex}",
            task_queue=task_queue,
            result_type=HealthReport,
        )
        result = await asyncio.to_thread(
            run_cli,
            "--address", temporal_server.address, "--output", "json",
            "healthcheck", "--task-queue", task_queue,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["taskQueue"] == task_queue
    assert report["pollers"] >= 1
