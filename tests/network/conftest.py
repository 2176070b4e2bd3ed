"""Fixtures for the network lifecycle: a simulated fleet, a worker, a client, fresh names.

Every test gets its own simulated world (in its private state directory), a
network name nobody else uses on the shared session server, and a worker that
runs the network workflow and its activities on the test's task queue against
that world. Simulated time runs 1000x faster than the wall clock, so a
10-second mesh propagation takes 10 ms.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities.backends.simulated import AuditEvent, SimulatedFleetBackend
from activities.network import HolderActivities, NetworkActivities
from engine.domain.fleet import SimulatedFleet, parse_fleet
from engine.domain.network import NetworkSettings, network_workflow_id
from engine.runtime.client import MeshfleetClient
from engine.runtime.worker import build_worker
from workflows.network import NetworkWorkflow

#: Real seconds per simulated second in these tests.
TIME_SCALE = 0.001
#: How often the activities poll the simulated fleet.
POLL = dt.timedelta(milliseconds=50)
#: Settings every test network starts with: a short mesh wait, a quick dead-worker verdict.
SETTINGS = NetworkSettings(
    mesh_ready_timeout=dt.timedelta(seconds=10), heartbeat_timeout=dt.timedelta(seconds=2)
)


def cluster(name: str, cluster_id: int | None, **extra: Any) -> dict[str, Any]:
    """A valid cluster of a fleet file (pod CIDR derived from the id, or given)."""
    entry: dict[str, Any] = {
        "name": name,
        "kubernetesVersion": "1.32.6",
        "ciliumVersion": "1.17.9",
        "podCIDRs": [f"10.{cluster_id or 200}.0.0/16"],
    }
    if cluster_id is not None:
        entry["clusterId"] = cluster_id
    entry.update(extra)
    return entry


def fleet(
    clusters: Sequence[dict[str, Any]],
    *,
    networks: Sequence[dict[str, Any]] = (),
    services: Sequence[dict[str, Any]] = (),
) -> SimulatedFleet:
    """A simulated fleet file of ``clusters`` (nothing meshed unless ``networks`` says so)."""
    return parse_fleet(
        {
            "apiVersion": "meshfleet.io/v1alpha1",
            "kind": "SimulatedFleet",
            "metadata": {"name": "network-tests"},
            "spec": {
                "timeScale": TIME_SCALE,
                "clusters": list(clusters),
                "networks": list(networks),
                "globalServices": list(services),
            },
        }
    )


def names(prefix: str, count: int) -> list[str]:
    """``prefix-1`` .. ``prefix-count``."""
    return [f"{prefix}-{i}" for i in range(1, count + 1)]


def joined_events(backend: SimulatedFleetBackend, cluster_name: str) -> list[Any]:
    """``memberJoined`` audit entries of a cluster, not counting the fleet file's own."""
    return [
        e
        for e in backend.audit(event=AuditEvent.MEMBER_JOINED, cluster=cluster_name)
        if not e.details.get("initial")
    ]


@pytest_asyncio.fixture(loop_scope="session")
async def network_name(client: Client) -> AsyncIterator[str]:
    """A network name unused on the session server; its networks are ended afterwards.

    (A network left running without a worker would make every later
    ``list_networks`` wait for its answer.) ``<name>-other`` is ended too.
    """
    name = f"mesh-{uuid.uuid4().hex[:10]}"
    yield name
    for workflow_id in (network_workflow_id(name), network_workflow_id(f"{name}-other")):
        with contextlib.suppress(RPCError):
            await client.get_workflow_handle(workflow_id).terminate("test finished")


@pytest.fixture
def backend(state_dir: Path) -> SimulatedFleetBackend:
    """The test's simulated fleet (load one with ``backend.load(fleet(...))``)."""
    return SimulatedFleetBackend(state_dir)


def network_worker(client: Client, task_queue: str, backend: SimulatedFleetBackend) -> Worker:
    """A worker running the network workflow and its activities against ``backend``."""
    return build_worker(
        client,
        task_queue,
        workflows=[NetworkWorkflow],
        activities=[
            *NetworkActivities(backend, poll_interval=POLL).all(),
            *HolderActivities(client).all(),
        ],
    )


@pytest_asyncio.fixture(loop_scope="session")
async def worker(
    client: Client, task_queue: str, backend: SimulatedFleetBackend
) -> AsyncIterator[Worker]:
    """A running network worker for this test."""
    async with network_worker(client, task_queue, backend) as running:
        yield running


@pytest.fixture
def meshfleet(client: Client, task_queue: str) -> MeshfleetClient:
    """meshfleet's client on the session server and this test's task queue."""
    return MeshfleetClient(client, task_queue=task_queue)
