"""The embedded server: reuse, port conflicts, no orphans, persistence, settings."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import urllib.request
import uuid
from pathlib import Path

import pytest
import structlog.testing

from engine.domain.errors import InvalidInputError, UnavailableError
from engine.domain.health import HEALTH_CHECK_WORKFLOW, HealthCheckInput, HealthReport
from engine.runtime import devserver
from engine.runtime.connection import ConnectionSettings, connect_client
from engine.runtime.worker import build_worker
from tests.runtime.serverproc import ServerProcess, process_alive, wait_gone


async def test_a_meshfleet_server_already_on_the_port_is_reused(
    temporal_server: devserver.EmbeddedServer, tmp_path: Path
) -> None:
    """Asking for the session server's port finds it and starts nothing new."""
    again = await devserver.start_embedded_server(
        tmp_path, grpc_port=temporal_server.config.ports.grpc, ui_port=None, ui=False
    )
    assert not again.owned
    assert again.pid is None
    again.stop()  # must leave the reused server alone
    assert await devserver.probe_server(temporal_server.address) == "meshfleet"


async def test_a_port_held_by_another_program_is_named_in_the_error(tmp_path: Path) -> None:
    """Something that is not Temporal on the gRPC port gives a clear error, and no server."""
    with socket.socket() as squatter:
        squatter.bind((devserver.LOOPBACK, 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(UnavailableError, match=rf"port {port} .* held by another program"):
            await devserver.start_embedded_server(tmp_path, grpc_port=port, ui_port=None, ui=False)


def test_settings_come_from_temporal_environment_variables() -> None:
    """TEMPORAL_ADDRESS, _NAMESPACE and _API_KEY are honoured; the key is never printed."""
    settings = ConnectionSettings.resolve(
        env={
            "TEMPORAL_ADDRESS": "temporal.internal:7233",
            "TEMPORAL_NAMESPACE": "fleet-prod",
            "TEMPORAL_API_KEY": "s3cr3t-key",
        }
    )
    assert settings.address == "temporal.internal:7233"
    assert settings.namespace == "fleet-prod"
    assert settings.api_key == "s3cr3t-key"
    assert settings.tls is True  # an API key implies TLS, as in Temporal's own clients
    assert "s3cr3t-key" not in repr(settings)
    assert not settings.embedded


def test_flags_win_over_the_environment_and_no_address_means_embedded() -> None:
    """Command-line values override the environment; with no address anywhere, embedded."""
    env = {"TEMPORAL_ADDRESS": "temporal.internal:7233", "TEMPORAL_NAMESPACE": "fleet-prod"}
    flagged = ConnectionSettings.resolve("127.0.0.1:9999", "staging", env=env)
    assert (flagged.address, flagged.namespace) == ("127.0.0.1:9999", "staging")
    assert ConnectionSettings.resolve(env={}).embedded


def test_a_malformed_address_is_rejected_with_the_rule() -> None:
    with pytest.raises(InvalidInputError, match="must be HOST:PORT"):
        ConnectionSettings.resolve("no-port-here", env={})


_OWNER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from engine.runtime import devserver
    from engine.runtime.telemetry import configure_logging

    configure_logging("json")  # logs to stderr; stdout carries only the pid

    async def main():
        server = await devserver.start_embedded_server(
            Path(sys.argv[1]), grpc_port=None, ui_port=None, ui=False)
        print(server.pid, flush=True)
        time.sleep(600)

    asyncio.run(main())
    """
)


def test_killing_the_parent_with_sigkill_does_not_leave_the_server_running(tmp_path: Path) -> None:
    """The kernel stops the server when its parent dies abruptly (PR_SET_PDEATHSIG)."""
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        server_pid = int(owner.stdout.readline())
        assert process_alive(server_pid)
        owner.kill()
        owner.wait()
        assert wait_gone(server_pid), "the Temporal server outlived its SIGKILLed parent"
    finally:
        owner.kill()


def _http_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:
        return int(response.status)


async def test_meshfleet_server_answers_on_its_ui_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    """`meshfleet server` serves the Web UI (HTTP 200); Ctrl-C stops it and its server."""
    proc = ServerProcess(tmp_path, devserver.free_port(), devserver.free_port())
    try:
        status = await asyncio.to_thread(_http_status, str(proc.info["ui"]))
        assert status == 200
        proc.interrupt()
        assert wait_gone(proc.server_pid)
    finally:
        proc.kill()


async def test_a_restarted_server_on_the_same_state_dir_still_lists_earlier_runs(
    tmp_path: Path, task_queue: str
) -> None:
    """Workflow runs survive a `meshfleet server` restart: the database is in the state dir."""
    grpc, ui = devserver.free_port(), devserver.free_port()
    workflow_id = f"healthcheck/{uuid.uuid4().hex}"
    first = ServerProcess(tmp_path, grpc, ui)
    try:
        client = await connect_client(str(first.info["address"]), ConnectionSettings())
        async with build_worker(client, task_queue):
            await client.execute_workflow(
                HEALTH_CHECK_WORKFLOW,
                HealthCheckInput(),
                id=workflow_id,
                task_queue=task_queue,
                result_type=HealthReport,
            )
        first.interrupt()
        assert wait_gone(first.server_pid)
    finally:
        first.kill()

    second = ServerProcess(tmp_path, grpc, ui)
    try:
        client = await connect_client(str(second.info["address"]), ConnectionSettings())
        description = await client.get_workflow_handle(workflow_id).describe()
        assert description.id == workflow_id
        assert description.status is not None
        assert description.status.name == "COMPLETED"
    finally:
        second.interrupt()
        second.kill()


async def test_a_chosen_port_taken_before_the_server_binds_it_is_swapped_for_a_fresh_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process takes a port between our choice and the server's bind: start again."""
    real_free_port = devserver.free_port
    with socket.socket() as squatter:
        squatter.bind((devserver.LOOPBACK, 0))  # bound, not listening: looks free to a probe
        taken = squatter.getsockname()[1]
        handed_out = iter([taken])
        monkeypatch.setattr(
            devserver, "free_port", lambda: next(handed_out, None) or real_free_port()
        )
        with structlog.testing.capture_logs() as logs:
            server = await devserver.start_embedded_server(
                tmp_path, grpc_port=None, ui_port=None, ui=False
            )
        try:
            assert server.owned
            assert taken not in server.config.ports.__dict__.values()
            assert await devserver.probe_server(server.address) == "meshfleet"
        finally:
            server.stop()
    retries = [entry for entry in logs if entry["event"] == "embedded_server.start_retried"]
    assert len(retries) == 1
    assert "address already in use" in retries[0]["reason"]


async def test_a_named_port_that_is_taken_is_not_swapped_and_the_error_says_why(
    tmp_path: Path,
) -> None:
    """Only ports chosen here are chosen again; the caller's own port fails with the reason."""
    with socket.socket() as squatter:
        squatter.bind((devserver.LOOPBACK, 0))
        taken = squatter.getsockname()[1]
        with (
            structlog.testing.capture_logs() as logs,
            pytest.raises(devserver.ServerExitedWhileStarting) as raised,
        ):
            await devserver.start_embedded_server(
                tmp_path, grpc_port=None, ui_port=None, metrics_port=taken, ui=False
            )
    assert f"metrics port {taken}" in str(raised.value).splitlines()[0]
    assert "address already in use" in str(raised.value).splitlines()[0]
    assert not [entry for entry in logs if entry["event"] == "embedded_server.start_retried"]


def test_the_reason_of_a_panicked_start_is_found_above_its_stack() -> None:
    """A Go panic ends with goroutine frames; the line that says why comes first."""
    text = "\n".join(
        [
            "time=... level=WARN msg=starting",
            "panic: listen tcp 127.0.0.1:41234: bind: address already in use",
            "",
            "goroutine 1 [running]:",
            "go.uber.org/fx.New(...)",
            "\t/go/pkg/mod/go.uber.org/fx/app.go:498 +0x1f4",
        ]
    )
    assert devserver.failure_reason(text) == (
        "panic: listen tcp 127.0.0.1:41234: bind: address already in use"
    )
    assert devserver.failure_reason("goroutine 1 [running]:\nmain.main()") is None
