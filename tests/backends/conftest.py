"""Fixtures for the backend tests: a controllable clock and small simulated fleets.

The simulated backend reads wall time through the clock it is given; these
tests give it a ``FakeClock`` so simulated time moves only when a test says
so (with ``timeScale: 1`` one clock second is one simulated second).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from activities.backends.simulated import SimulatedFleetBackend
from engine.domain.fleet import parse_fleet

#: The service most tests watch, and its key.
NAMESPACE, SERVICE = "shop", "checkout"
CHECKOUT = f"{NAMESPACE}/{SERVICE}"
SHARED = "service.cilium.io/shared"
MEMBERS = ["alpha", "bravo", "charlie"]


class FakeClock:
    """Wall-clock seconds that move only when told to."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def cluster(name: str, cluster_id: int, **extra: Any) -> dict[str, Any]:
    """A valid cluster entry of a fleet file."""
    return {
        "name": name,
        "kubernetesVersion": "1.32.6",
        "ciliumVersion": "1.17.9",
        "clusterId": cluster_id,
        "podCIDRs": [f"10.{cluster_id}.0.0/16"],
        **extra,
    }


def fleet_document(**spec: Any) -> dict[str, Any]:
    """Three meshed members serving shop/checkout (3 endpoints each, at least 2 wanted).

    Keyword arguments replace parts of ``spec``; one clock second is one simulated second.
    """
    document: dict[str, Any] = {
        "apiVersion": "meshfleet.io/v1alpha1",
        "kind": "SimulatedFleet",
        "metadata": {"name": "test"},
        "spec": {
            "timeScale": 1.0,
            "durations": {
                "controlPlaneUpgrade": "600s",
                "ciliumUpgrade": "120s",
                "meshPropagation": "10s",
                "agentRestart": "20s",
            },
            "clusters": [cluster(name, i + 1) for i, name in enumerate(MEMBERS)],
            "networks": [{"name": "prod-mesh", "members": list(MEMBERS)}],
            "globalServices": [
                {
                    "namespace": NAMESPACE,
                    "name": SERVICE,
                    "clusters": {name: 3 for name in MEMBERS},
                    "minReadyEndpoints": 2,
                }
            ],
        },
    }
    document["spec"].update(copy.deepcopy(spec))
    return document


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def world_dir(tmp_path: Path) -> Path:
    """A private state directory for one test's simulated world."""
    path = tmp_path / "sim-state"
    path.mkdir()
    return path


LoadWorld = Callable[..., SimulatedFleetBackend]


@pytest.fixture
def load_world(world_dir: Path, clock: FakeClock) -> LoadWorld:
    """Load ``fleet_document(**spec)`` into a fresh world and return its backend."""

    def load(**spec: Any) -> SimulatedFleetBackend:
        backend = SimulatedFleetBackend(world_dir, clock=clock)
        backend.load(parse_fleet(fleet_document(**spec)), reset=True)
        return backend

    return load


@pytest.fixture
def backend(load_world: LoadWorld) -> SimulatedFleetBackend:
    """The default three-member fleet, loaded."""
    return load_world()
