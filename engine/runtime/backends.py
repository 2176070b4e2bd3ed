"""Choosing the fleet backend a worker acts through."""

from __future__ import annotations

import enum
from pathlib import Path

from engine.domain.backend import FleetBackend
from engine.domain.errors import FieldError, InvalidInputError
from engine.runtime.settings import state_dir as default_state_dir


class BackendKind(str, enum.Enum):
    #: The embedded default: a persistent simulated fleet in the state directory.
    SIMULATED = "simulated"
    #: Real clusters through the Kubernetes API (Cluster API + Cilium).
    KUBERNETES = "kubernetes"


def open_backend(
    kind: BackendKind = BackendKind.SIMULATED,
    *,
    state_dir: Path | None = None,
    access_file: Path | None = None,
) -> FleetBackend:
    """The backend of ``kind``; the Kubernetes one needs its access file."""
    if kind is BackendKind.SIMULATED:
        from activities.backends.simulated import SimulatedFleetBackend

        return SimulatedFleetBackend(state_dir or default_state_dir())
    if access_file is None:
        raise InvalidInputError(
            [FieldError(path="--access", message="the kubernetes backend needs an access file")]
        )
    from activities.backends.kubernetes import open_kubernetes_backend

    backend: FleetBackend = open_kubernetes_backend(access_file)
    return backend
