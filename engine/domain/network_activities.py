"""The network workflow's activities: their names and their input and result models.

The workflow calls activities by these names and never imports them; the
activities (``activities/network.py``) register under the same names.

Pure data: no I/O.
"""

from __future__ import annotations

import datetime as dt

from pydantic import Field

from engine.domain.durations import Duration
from engine.domain.membership import MembershipRule
from engine.domain.mesh import NotReadyLink
from engine.domain.model import DomainModel
from engine.domain.network import HolderExecution
from engine.domain.services import AnnotationChange, GlobalService

__all__ = [
    "ACTIVITY_CHECK_CANDIDATES",
    "ACTIVITY_CONNECT_PEERS",
    "ACTIVITY_DISABLE_MESH",
    "ACTIVITY_DISCONNECT_PEERS",
    "ACTIVITY_DRAIN_SERVICES",
    "ACTIVITY_ENABLE_MESH",
    "ACTIVITY_LIST_SERVICES",
    "ACTIVITY_LOOK_AT_HOLDER",
    "ACTIVITY_RESTORE_SERVICES",
    "ACTIVITY_WAIT_MESH_READY",
    "ACTIVITY_WAIT_UNLISTED",
    "ACTIVITY_WATCH_HOLDER",
    "CheckCandidatesInput",
    "DisableMeshInput",
    "DrainServicesInput",
    "DrainedServices",
    "EnableMeshInput",
    "EnableMeshResult",
    "GlobalServices",
    "HolderEnd",
    "ListServicesInput",
    "MemberId",
    "MeshReadiness",
    "PeersInput",
    "RestoreServicesInput",
    "WaitMeshReadyInput",
    "WaitUnlistedInput",
    "WatchHolderInput",
]

ACTIVITY_CHECK_CANDIDATES = "network.check_candidates"


ACTIVITY_ENABLE_MESH = "network.enable_mesh"


ACTIVITY_CONNECT_PEERS = "network.connect_peers"


ACTIVITY_WAIT_MESH_READY = "network.wait_mesh_ready"


ACTIVITY_DRAIN_SERVICES = "network.drain_services"


ACTIVITY_DISCONNECT_PEERS = "network.disconnect_peers"


ACTIVITY_WAIT_UNLISTED = "network.wait_unlisted"


ACTIVITY_DISABLE_MESH = "network.disable_mesh"


ACTIVITY_RESTORE_SERVICES = "network.restore_services"


ACTIVITY_LIST_SERVICES = "network.list_services"


ACTIVITY_WATCH_HOLDER = "network.watch_holder"


ACTIVITY_LOOK_AT_HOLDER = "network.look_at_holder"


class MemberId(DomainModel):
    """A member's name and the cluster id the network knows it by."""

    name: str
    cluster_id: int


class CheckCandidatesInput(DomainModel):
    """Check newcomers against the rules that need I/O, in order, against the members."""

    network: str
    candidates: list[str]
    members: list[MemberId]


class EnableMeshInput(DomainModel):
    """Deploy the mesh on a newcomer, recording the network, and wait until it is done."""

    cluster: str
    network: str
    idempotency_key: str
    timeout: Duration
    #: The id the network allocated (the cluster's own, or one assigned); None in
    #: histories recorded before it was passed (the backend then keeps the cluster's own).
    cluster_id: int | None = None


class EnableMeshResult(DomainModel):
    """Whether the mesh came up on the newcomer; ``rule`` when it turned out to break one."""

    cluster: str
    succeeded: bool
    rule: MembershipRule | None = None
    message: str | None = None


class PeersInput(DomainModel):
    """Connect (or disconnect) ``cluster`` to ``peers``, one direction."""

    cluster: str
    peers: list[str]
    idempotency_key: str


class WaitMeshReadyInput(DomainModel):
    """Wait until every member sees every other ready, or ``timeout`` passes."""

    members: list[str]
    timeout: Duration


class MeshReadiness(DomainModel):
    """How a wait for the mesh ended: ready, or the links still not ready."""

    ready: bool
    not_ready_links: list[NotReadyLink] = Field(default_factory=list)
    observed_at: dt.datetime | None = None


class DrainServicesInput(DomainModel):
    """Stop ``cluster`` exporting its global services; wait until ``peers`` stop routing to it."""

    cluster: str
    peers: list[str]
    idempotency_key: str
    timeout: Duration


class DrainedServices(DomainModel):
    """The annotation changes a drain made (restoring sets ``previous`` back)."""

    changes: list[AnnotationChange] = Field(default_factory=list)


class WaitUnlistedInput(DomainModel):
    """Wait until none of ``peers`` lists ``cluster`` as a peer any more."""

    cluster: str
    peers: list[str]
    timeout: Duration


class RestoreServicesInput(DomainModel):
    """Put back the annotations a drain changed."""

    changes: list[AnnotationChange]
    idempotency_key: str


class ListServicesInput(DomainModel):
    """List the global services of these members."""

    members: list[str]


class DisableMeshInput(DomainModel):
    """Remove the mesh components and the network record from a cluster."""

    cluster: str
    idempotency_key: str


class GlobalServices(DomainModel):
    """What the backend reports about the members' global services."""

    services: list[GlobalService] = Field(default_factory=list)


class WatchHolderInput(DomainModel):
    """Wait until the holder's execution chain closes, or ``period`` passes."""

    holder: HolderExecution
    period: Duration


class HolderEnd(DomainModel):
    """How a watch (or a one-off look) at the holder's execution ended."""

    #: The execution chain is closed (or gone): the hold has no holder left.
    ended: bool
    #: How it closed (completed, failed, terminated, canceled, timed out, not found).
    how: str | None = None
