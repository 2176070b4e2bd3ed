"""A simulated fleet, a worker and a network, ready for update runs (shared by run tests)."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import temporalio.activity
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from activities.backends.simulated import SimulatedFleetBackend
from engine.domain.fleet import parse_fleet
from engine.domain.network import (
    NETWORK_WORKFLOW,
    QUERY_DESCRIBE,
    UPDATE_JOIN,
    NetworkDescription,
    NetworkInput,
    NetworkSettings,
    network_workflow_id,
)
from engine.domain.network_requests import JoinRequest
from engine.domain.run import RunStatus, RunTimings
from engine.domain.runspec import RunSpec
from engine.runtime.runs import UpdateRunHandle, start_update_run
from engine.runtime.worker import all_activities, build_worker
from strategies import parse_strategy
from tests.polling import eventually

#: Fast enough for tests: a 600 s control-plane upgrade takes 0.3 s.
TIME_SCALE = 0.0005
TIMINGS = RunTimings(
    poll_interval=dt.timedelta(milliseconds=50),
    drain_timeout=dt.timedelta(seconds=20),
    control_plane_timeout=dt.timedelta(seconds=60),
    cilium_timeout=dt.timedelta(seconds=60),
    linger=dt.timedelta(minutes=10),
)


@dataclass
class Cluster:
    name: str
    group: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    kubernetes: str = "1.32.6"
    cilium: str = "1.17.9"
    faults: list[dict[str, Any]] = field(default_factory=list)
    window: dict[str, Any] | None = None


def fleet_document(
    clusters: Sequence[Cluster],
    services: Sequence[dict[str, Any]] = (),
    time_scale: float = TIME_SCALE,
) -> dict[str, Any]:
    """A SimulatedFleet document with one cluster per entry, ids and CIDRs assigned."""
    return {
        "apiVersion": "meshfleet.io/v1alpha1",
        "kind": "SimulatedFleet",
        "metadata": {"name": "test"},
        "spec": {
            "timeScale": time_scale,
            "clusters": [
                {
                    "name": c.name,
                    "labels": c.labels,
                    **({"updateGroup": c.group} if c.group else {}),
                    "kubernetesVersion": c.kubernetes,
                    "ciliumVersion": c.cilium,
                    "clusterId": index + 1,
                    "podCIDRs": [f"10.{index + 1}.0.0/16"],
                    "faults": c.faults,
                    **({"maintenanceWindow": c.window} if c.window else {}),
                }
                for index, c in enumerate(clusters)
            ],
            "globalServices": list(services),
        },
    }


def strategy(stages: list[dict[str, Any]], **health: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"stages": stages}
    spec["health"] = {"meshReadyTimeout": "30s", "soakCheckInterval": "1s", **health}
    return {
        "apiVersion": "meshfleet.io/v1alpha1",
        "kind": "UpdateStrategy",
        "metadata": {"name": "test"},
        "spec": spec,
    }


@dataclass
class Fleet:
    """What a run test works with."""

    client: Client
    task_queue: str
    backend: SimulatedFleetBackend
    network: str
    members: list[str]

    async def start_run(
        self,
        strategy_document: dict[str, Any],
        target: str = "1.33",
        *,
        via: Client | None = None,
        **spec: Any,
    ) -> UpdateRunHandle:
        """Start a run of the fleet's network, through ``via`` (a time-skipping client,
        say) or else the fleet's own client."""
        run_spec = RunSpec(
            network=self.network,
            kubernetes_version=target,
            strategy=parse_strategy(strategy_document),
            **spec,
        )
        return await start_update_run(
            via or self.client, self.task_queue, run_spec, timings=TIMINGS
        )

    def audit(self, event: str | None = None) -> list[Any]:
        entries = self.backend.audit()
        return [e for e in entries if event is None or e.event.value == event]


async def create_network(client: Client, task_queue: str, name: str, members: list[str]) -> None:
    """Start the network workflow and join the members (the network lifecycle's own path)."""
    handle = await client.start_workflow(
        NETWORK_WORKFLOW,
        arg=NetworkInput(
            name=name, settings=NetworkSettings(mesh_ready_timeout=dt.timedelta(seconds=30))
        ),
        id=network_workflow_id(name),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
    )
    await handle.execute_update(UPDATE_JOIN, JoinRequest(members=members))


def activity_name(function: Callable[..., Any]) -> str:
    """The name an activity function is registered under."""
    definition = temporalio.activity._Definition.from_callable(function)
    assert definition is not None
    assert definition.name is not None
    return definition.name


async def network_holder(fleet: Fleet) -> str | None:
    """Which run holds the fleet's network now (None: free)."""
    handle = fleet.client.get_workflow_handle(network_workflow_id(fleet.network))
    described = await handle.query(QUERY_DESCRIBE, result_type=NetworkDescription)
    return described.holder


async def network_freed(fleet: Fleet, timeout: float = 30) -> bool:
    """Wait until no run holds the fleet's network (False: still held at the timeout)."""

    async def free() -> bool:
        return await network_holder(fleet) is None

    try:
        return await eventually(free, timeout=timeout, what=f"{fleet.network} to be freed")
    except AssertionError:
        return False


@contextlib.asynccontextmanager
async def running_fleet(
    client: Client,
    task_queue: str,
    state_dir: Path,
    clusters: Sequence[Cluster],
    services: Sequence[dict[str, Any]] = (),
    replaced: Sequence[Callable[..., Any]] = (),
) -> AsyncIterator[Fleet]:
    """Load the fleet, run a worker on it, and create a network of every cluster.

    ``replaced``: fake activities registered in place of the real ones of the same name.
    """
    backend = SimulatedFleetBackend(state_dir)
    backend.load(parse_fleet(fleet_document(clusters, services)))
    network = f"net-{uuid.uuid4().hex[:8]}"
    members = [c.name for c in clusters]
    fakes = {activity_name(fake) for fake in replaced}
    # Without fakes the worker builds its own activities (over the traced backend).
    activities = (
        [
            *(a for a in all_activities(backend, client) if activity_name(a) not in fakes),
            *replaced,
        ]
        if replaced
        else None
    )
    async with build_worker(client, task_queue, backend=backend, activities=activities):
        await create_network(client, task_queue, network, members)
        yield Fleet(client, task_queue, backend, network, members)


async def wait_until(
    handle: UpdateRunHandle, check: Callable[[RunStatus], bool], timeout: float = 60
) -> RunStatus:
    """Poll the run's status until ``check(status)`` holds, and return that status."""

    last: list[RunStatus] = []

    async def holds() -> RunStatus | None:
        status = await handle.status()
        last[:] = [status]
        return status if check(status) else None

    try:
        status = await eventually(holds, timeout=timeout, what="the run's status to pass")
    except AssertionError as error:
        raise AssertionError(f"{error}; the run was {last[0].state if last else None}") from None
    assert status is not None
    return status
