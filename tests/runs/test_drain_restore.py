"""Drain and restore are one safe pair: whatever happens after a drain, the member is restored.

Each test drives a real run on the simulated fleet (real Temporal dev server, real
worker) into one failure path and reads the outcome from the audit log and the
services' annotations, never from timing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from temporalio.client import Client

from activities.backends.simulated import SimulatedFleetBackend
from engine.domain.fleet import parse_fleet
from engine.domain.run import RunTimings
from engine.domain.runspec import RunSpec
from engine.runtime.runs import UpdateRunHandle, start_update_run
from engine.runtime.worker import build_worker
from strategies import parse_strategy
from tests.runs.harness import Cluster, Fleet, create_network, fleet_document

#: The service every test here drains: two ready endpoints in each cluster.
SERVICE = {"namespace": "shop", "name": "checkout", "minReadyEndpoints": 1}
#: Simulated seconds for a change to cross the mesh: 2 s of wall time at the harness scale.
SLOW_PROPAGATION = "4000s"
FAST = RunTimings(
    poll_interval=dt.timedelta(milliseconds=50),
    drain_timeout=dt.timedelta(seconds=20),
    control_plane_timeout=dt.timedelta(seconds=60),
    cilium_timeout=dt.timedelta(seconds=60),
    linger=dt.timedelta(minutes=10),
)


def service_in(*clusters: str, ready: int = 2) -> dict[str, Any]:
    """The checkout service, global in ``clusters`` with ``ready`` endpoints each."""
    return {**SERVICE, "clusters": dict.fromkeys(clusters, ready)}


@contextlib.asynccontextmanager
async def drain_fleet(
    client: Client,
    task_queue: str,
    state_dir: Path,
    clusters: Sequence[Cluster],
    services: Sequence[dict[str, Any]],
    *,
    mesh_propagation: str = "10s",
) -> AsyncIterator[Fleet]:
    """Like ``harness.running_fleet``, with the mesh's propagation delay chosen by the test."""
    document = fleet_document(clusters, services)
    document["spec"]["durations"] = {"meshPropagation": mesh_propagation}
    backend = SimulatedFleetBackend(state_dir)
    backend.load(parse_fleet(document))
    network = f"net-{uuid.uuid4().hex[:8]}"
    members = [c.name for c in clusters]
    async with build_worker(client, task_queue, backend=backend):
        await create_network(client, task_queue, network, members)
        yield Fleet(client, task_queue, backend, network, members)


async def start_run(
    fleet: Fleet, strategy_document: dict[str, Any], timings: RunTimings = FAST
) -> UpdateRunHandle:
    """Start a run to 1.33 with ``timings`` (the harness's own start uses fixed timings)."""
    spec = RunSpec(
        network=fleet.network,
        kubernetes_version="1.33",
        strategy=parse_strategy(strategy_document),
    )
    return await start_update_run(fleet.client, fleet.task_queue, spec, timings=timings)


def annotations(fleet: Fleet, cluster: str, key: str = "shop/checkout") -> dict[str, str]:
    """The annotations of ``cluster``'s copy of a service, as the world holds them now."""
    return dict(fleet.backend.world().clusters[cluster].service_annotations[key])
