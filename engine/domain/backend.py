"""The fleet backend protocol: everything activities may ask of a fleet, and the answers.

Activities act on clusters only through a :class:`FleetBackend`. Two backends
implement it: ``simulated`` (the embedded default, ``activities.backends.simulated``)
and ``kubernetes`` (real clusters over the Kubernetes API). Every method and
model here is expressible over the Kubernetes API and Cilium's status output
(see ``reference/cilium-clustermesh.md``); simulator-only concepts (faults,
simulated time, the audit log) live on the simulated backend's own class.

Conventions every implementation follows:

- Every mutating method takes ``idempotency_key``. Calling it again with the
  same key returns what the first call returned and changes nothing (so a
  retried activity never upgrades twice, and a retried drain returns the
  annotations from *before* the drain). Reusing a key for a different
  operation or cluster raises :class:`OperationConflictError`.
- Membership is tracked by the caller (the network workflow is its source of
  truth). The backend records the network name it was given in
  :meth:`FleetBackend.enable_mesh` (on Kubernetes: a ``meshfleet.io/network``
  label on ``cilium-config``) and reports it in :class:`MemberDescription`, so
  "a cluster belongs to at most one network" can be checked against reality,
  and reports each member's configured peers (``cilium-clustermesh`` Secret).
- A cluster whose API cannot be reached makes mutating calls raise
  :class:`ClusterUnavailableError` (retryable); read calls report it in the
  answer instead (``apiAvailable: false``) so health gates can see it.
- Slow work (upgrades, enabling the mesh) is *started* and then *read*:
  ``start_*`` returns an :class:`OperationProgress` at once; poll it with
  :meth:`FleetBackend.get_operation`.

This module is pure data and rules: no I/O.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from pydantic import Field

from engine.domain.errors import MeshfleetError, Retry, UnavailableError
from engine.domain.membership import JoinCheck, MemberDescription
from engine.domain.mesh import MeshHealth, NotReadyLink, RolloutStatus
from engine.domain.model import DomainModel
from engine.domain.services import AnnotationChange, GlobalService

__all__ = [
    "ClusterUnavailableError",
    "FleetBackend",
    "OperationConflictError",
    "OperationInProgressError",
    "OperationKind",
    "OperationProgress",
    "OperationState",
]

# --- errors -------------------------------------------------------------------------------


class ClusterUnavailableError(UnavailableError):
    """The cluster's API server cannot be reached right now; retrying later may work."""

    retry = Retry.RETRYABLE

    def __init__(self, cluster: str, reason: str = "API server unavailable") -> None:
        self.cluster = cluster
        self.reason = reason
        super().__init__(f"cluster {cluster!r}: {reason}")


class OperationConflictError(MeshfleetError):
    """An idempotency key was reused for a different operation (a bug in the caller)."""

    exit_code = 2
    retry = Retry.NON_RETRYABLE


class OperationInProgressError(MeshfleetError):
    """Another operation of the same kind is still running on the cluster."""

    retry = Retry.NON_RETRYABLE  # the step fails at once instead of waiting for another's

    def __init__(self, cluster: str, kind: OperationKind, running_key: str) -> None:
        self.cluster = cluster
        self.kind = kind
        self.running_key = running_key
        super().__init__(
            f"cluster {cluster!r}: a {kind.value} is already running (key {running_key!r})"
        )


# --- long-running operations --------------------------------------------------------------


class OperationKind(str, enum.Enum):
    """A slow operation a backend starts and then reports on (:class:`OperationProgress`)."""

    CONTROL_PLANE_UPGRADE = "controlPlaneUpgrade"
    CILIUM_UPGRADE = "ciliumUpgrade"
    ENABLE_MESH = "enableMesh"


class OperationState(str, enum.Enum):
    """Where a started operation is: running, or done one way or the other."""

    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class OperationProgress(DomainModel):
    """A started operation as last observed; poll ``get_operation`` until it is done."""

    key: str
    cluster: str
    kind: OperationKind
    state: OperationState
    target_version: str | None = None
    percent: int = Field(default=0, ge=0, le=100)
    phase: str = ""
    message: str | None = None
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    #: For Cilium upgrades: agent DaemonSet, operator, clustermesh-apiserver.
    components: list[RolloutStatus] = Field(default_factory=list)

    @property
    def done(self) -> bool:
        """Succeeded or failed: nothing more will change."""
        return self.state is not OperationState.RUNNING


# --- the protocol -------------------------------------------------------------------------


@runtime_checkable
class FleetBackend(Protocol):
    """Everything activities may ask of a fleet. All methods are coroutines."""

    async def describe_member(self, cluster: str) -> MemberDescription:
        """What ``cluster`` is and runs. Raises NotFoundError for an unknown cluster."""
        ...

    async def check_join_prerequisites(
        self, cluster: str, network: str, members: Sequence[str]
    ) -> JoinCheck:
        """Check ``cluster`` against the membership rules for ``network`` with ``members``."""
        ...

    async def mesh_health(self, members: Sequence[str], *, focus: str | None = None) -> MeshHealth:
        """How each of ``members`` sees each of the others (each expects all the others).

        With ``focus`` (one of ``members``), only the links from or to it are read:
        its own view in full, and each other member's entry for it — what checking
        one member needs, at a cost that grows with the members, not their square.
        """
        ...

    async def not_ready_links(
        self, members: Sequence[str], *, focus: str | None = None
    ) -> list[NotReadyLink]:
        """``(await mesh_health(members, focus=focus)).not_ready_links()``: what the built-in
        mesh gate and a member's verify step ask. A backend may answer it without building
        every link's status (a full mesh of 255 members has 64,770 links)."""
        ...

    async def enable_mesh(
        self,
        cluster: str,
        *,
        network: str,
        idempotency_key: str,
        cluster_id: int | None = None,
    ) -> OperationProgress:
        """Deploy the clustermesh-apiserver and agent mesh config, recording ``network``.

        ``cluster_id`` is the network's allocation for the cluster (None: keep its own).
        """
        ...

    async def disable_mesh(self, cluster: str, *, idempotency_key: str) -> None:
        """Remove the mesh components and the network record (the reverse of enabling)."""
        ...

    async def connect_peers(
        self, cluster: str, peers: Sequence[str], *, idempotency_key: str
    ) -> None:
        """Configure ``cluster``'s agents to connect to ``peers`` (one direction)."""
        ...

    async def disconnect_peers(
        self, cluster: str, peers: Sequence[str], *, idempotency_key: str
    ) -> None:
        """Remove ``peers`` from ``cluster``'s mesh configuration (one direction)."""
        ...

    async def target_problem(
        self, cluster: str, kubernetes_version: str, cilium_version: str
    ) -> str | None:
        """Why ``cluster`` cannot be upgraded to exactly these versions (None: it can).

        Asked at preflight, before the member is drained: a target the upgrade
        steps would refuse is refused here, while nothing is touched yet.
        """
        ...

    async def start_control_plane_upgrade(
        self, cluster: str, target_version: str, *, idempotency_key: str
    ) -> OperationProgress:
        """Start upgrading the control plane to ``target_version``."""
        ...

    async def start_cilium_upgrade(
        self, cluster: str, target_version: str, *, idempotency_key: str
    ) -> OperationProgress:
        """Start the bundled Cilium upgrade (agent, operator, clustermesh-apiserver)."""
        ...

    async def get_operation(self, cluster: str, idempotency_key: str) -> OperationProgress:
        """The operation started with ``idempotency_key``. NotFoundError if none."""
        ...

    async def list_global_services(self, members: Sequence[str]) -> list[GlobalService]:
        """Services global in at least one of ``members``, with each member's routing view."""
        ...

    async def set_service_annotations(
        self,
        cluster: str,
        namespace: str,
        name: str,
        changes: Mapping[str, str | None],
        *,
        idempotency_key: str,
    ) -> AnnotationChange:
        """Set (or, with None, remove) service annotations; returns before and after."""
        ...

    async def set_namespace_annotations(
        self,
        cluster: str,
        namespace: str,
        changes: Mapping[str, str | None],
        *,
        idempotency_key: str,
    ) -> AnnotationChange:
        """Set (or, with None, remove) namespace annotations; returns before and after."""
        ...
