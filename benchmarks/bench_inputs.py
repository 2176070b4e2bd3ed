"""The benchmark's inputs: its simulated fleets, its strategy, its networks.

Each network is a simulated fleet of ``m-000`` ... clusters, already joined,
with three global services each served by about five of them; the strategy
runs its stages one after the other with every member of a stage at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from activities.backends.simulated import SimulatedFleetBackend

if TYPE_CHECKING:
    from temporalio.client import Client

    from activities.backends.simulated.world import Simulation

T = TypeVar("T")

#: A private world (one worker process: this one) is stored when the round reads its audit
#: log, not every second: storing a 255-cluster world writes about 2 MB (some 65 ms of CPU),
#: and ten worlds stored once a second each took a third of the worker's CPU. That is the
#: simulated fleet's cost, not meshfleet's: real clusters keep their own state.
PRIVATE_WORLD_STORED = math.inf

#: Three global services, each served by about five clusters spread over the stages.
SERVICES = 3
HOLDERS = 5


# --- inputs ---------------------------------------------------------------------------------


def member_names(count: int) -> list[str]:
    return [f"m-{index:03d}" for index in range(count)]


def stage_split(names: list[str], stages: int) -> list[list[str]]:
    """Members split into ``stages`` consecutive, nearly equal parts."""
    size, extra = divmod(len(names), stages)
    parts, start = [], 0
    for index in range(stages):
        end = start + size + (1 if index < extra else 0)
        parts.append(names[start:end])
        start = end
    return parts


def service_holders(names: list[str]) -> list[list[str]]:
    """The members serving each global service: about ``HOLDERS`` each."""
    return [names[k :: max(1, len(names) // HOLDERS)] for k in range(SERVICES)]


def fleet_document(network: str, names: list[str], stages: int, time_scale: float) -> object:
    """A pre-joined network of ``names``; three global services, each on about five of them."""
    stage_of = {n: i for i, part in enumerate(stage_split(names, stages)) for n in part}
    return {
        "apiVersion": "meshfleet.io/v1alpha1",
        "kind": "SimulatedFleet",
        "metadata": {"name": "bench"},
        "spec": {
            "timeScale": time_scale,
            "clusters": [
                {
                    "name": name,
                    "labels": {"stage": f"s{stage_of[name]}"},
                    "kubernetesVersion": "1.32.6",
                    "ciliumVersion": "1.17.9",
                    "clusterId": index + 1,
                    "podCIDRs": [f"10.{index // 256}.{index % 256}.0/24"],
                }
                for index, name in enumerate(names)
            ],
            "networks": [{"name": network, "members": names}],
            "globalServices": [
                {
                    "namespace": "shop",
                    "name": f"svc-{k}",
                    "clusters": dict.fromkeys(holders, 2),
                    "minReadyEndpoints": 1,
                }
                for k, holders in enumerate(service_holders(names))
            ],
        },
    }


def strategy_document(stages: int) -> dict[str, Any]:
    return {
        "apiVersion": "meshfleet.io/v1alpha1",
        "kind": "UpdateStrategy",
        "metadata": {"name": "bench"},
        "spec": {
            "stages": [
                {
                    "name": f"s{index}",
                    "maxConcurrency": "100%",
                    "groups": [
                        {
                            "name": f"g{index}",
                            "selector": f"stage=s{index}",
                            "maxConcurrency": "100%",
                        }
                    ],
                }
                for index in range(stages)
            ],
            "health": {"meshReadyTimeout": "5m", "minReadyEndpoints": 0},
        },
    }


class MeteredBackend(SimulatedFleetBackend):
    """The simulated fleet, counting the CPU its accesses take (on whichever thread).

    The benchmark's worker CPU includes the simulated clusters' own work, which
    production (real clusters behind their API servers) does not pay: this figure
    says how much of it that was.
    """

    def __init__(self, state_dir: Path, *, write_behind: float | None) -> None:
        super().__init__(state_dir, write_behind=write_behind)
        self.cpu_seconds = 0.0
        self._cpu_lock = threading.Lock()

    def _transact(self, action: Callable[[Simulation], T], *, reads: bool = False) -> T:
        started = time.thread_time()
        try:
            return super()._transact(action, reads=reads)
        finally:
            spent = time.thread_time() - started
            with self._cpu_lock:
                self.cpu_seconds += spent


@dataclass
class Network:
    name: str
    members: list[str]
    queue: str
    state: Path
    backend: MeteredBackend


async def prepare_network(
    state: Path, index: int, members: int, stages: int, time_scale: float, *, shared: bool
) -> Network:
    """A freshly loaded simulated fleet for network ``index``.

    ``shared``: worker processes open the world too, so every access is a transaction;
    otherwise the world is private to this process and stored when the round reads it
    (``PRIVATE_WORLD_STORED``).
    """
    from engine.domain.fleet import parse_fleet

    name = f"bench-{index}"
    names = member_names(members)
    directory = state / f"fleet-{index}"
    backend = MeteredBackend(directory, write_behind=None if shared else PRIVATE_WORLD_STORED)
    fleet = parse_fleet(fleet_document(name, names, stages, time_scale))
    await asyncio.to_thread(backend.load, fleet, reset=True)
    return Network(name, names, f"bench-{index}-{uuid.uuid4().hex[:6]}", directory, backend)


async def adopt_network(client: Client, network: Network) -> None:
    """Start the network's workflow already holding the members the fleet file joined.

    The run is what is measured, not 255 joins: the workflow starts with the
    state continue-as-new would carry for a connected network of these members.
    """
    from engine.domain.network import (
        NETWORK_WORKFLOW,
        QUERY_DESCRIBE,
        NetworkDescription,
        NetworkInput,
        NetworkMember,
        NetworkState,
        NetworkStatus,
        network_workflow_id,
    )

    now = dt.datetime.now(dt.UTC)
    state = NetworkState(
        name=network.name,
        uid=uuid.uuid4().hex,
        created_at=now,
        status=NetworkStatus.CONNECTED,
        members=[
            NetworkMember(name=name, cluster_id=index + 1, joined_at=now, operation="op-1")
            for index, name in enumerate(network.members)
        ],
    )
    handle = await client.start_workflow(
        NETWORK_WORKFLOW,
        NetworkInput(name=network.name, state=state),
        id=network_workflow_id(network.name),
        task_queue=network.queue,
    )
    await handle.query(QUERY_DESCRIBE, result_type=NetworkDescription)


#: Audit events of one member's upgrade, each expected exactly once per member.
UPGRADE_EVENTS = (
    "controlPlaneUpgradeStarted",
    "controlPlaneUpgradeCompleted",
    "ciliumUpgradeStarted",
    "ciliumUpgradeCompleted",
)


async def upgrade_counts(network: Network) -> dict[str, dict[str, int]]:
    """Per upgrade audit event, how many times each member of ``network`` has it."""
    entries = await asyncio.to_thread(network.backend.audit)
    counts = {event: dict.fromkeys(network.members, 0) for event in UPGRADE_EVENTS}
    for entry in entries:
        if entry.event.value in counts and entry.cluster in counts[entry.event.value]:
            counts[entry.event.value][entry.cluster] += 1
    return counts
