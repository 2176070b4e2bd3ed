"""The CLI's own commands and its error contract: one clear line, non-zero exit, no traceback."""

from __future__ import annotations

import subprocess

from engine.runtime import devserver
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


def test_healthcheck_against_a_running_server_succeeds(
    temporal_server: devserver.EmbeddedServer,
) -> None:
    result = run_cli("--address", temporal_server.address, "--output", "json", "healthcheck")
    assert result.returncode == 0, result.stderr
    assert '"message": "ping"' in result.stdout
