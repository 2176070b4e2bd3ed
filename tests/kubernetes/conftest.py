"""Fixtures for the Kubernetes backend: an emulated fleet of kmock API servers, real client.

Each member cluster and the Cluster API management cluster is a kmock
``KubernetesEmulator`` served on its own loopback port and seeded with
realistic objects (:mod:`tests.kubernetes.seeds`). The backend reaches them
through a real kubeconfig file and, for the Cluster API member, through the
``<cluster>-kubeconfig`` Secret on the management cluster
(:mod:`tests.kubernetes.emulated_fleet`). The exec API is the one seam:
:class:`~tests.kubernetes.agents.FakeAgents` answers ``cilium-dbg`` with
real-shaped output. :class:`~tests.kubernetes.controllers.Controllers` moves
emulated status the way Cluster API, the Helm add-on provider and the kubelet
would.

Where kmock 0.8 falls short of an API server, :mod:`tests.kubernetes.kmock_patches`
(and only it) works around it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.kubernetes.emulated_fleet import Fleet, emulated_fleet
from tests.kubernetes.kmock_patches import namespaces_are_a_resource


@pytest.fixture(autouse=True)
def _namespaces_are_a_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    """``/api/v1/namespaces[/{name}]`` is the Namespace resource (kmock 0.8 misparses it)."""
    namespaces_are_a_resource(monkeypatch)


@pytest_asyncio.fixture(loop_scope="session")
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    """A fresh emulated fleet per test; every server and controller stopped afterwards."""
    async with emulated_fleet(tmp_path) as emulated:
        yield emulated
