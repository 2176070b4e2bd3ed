"""The simulated-fleet file (``kind: SimulatedFleet``): users' model of their own fleet.

Users write these to rehearse strategies before touching production, so the
shape is a contract: see the README's "Rehearse your strategy" section. The
document comes in already parsed (:func:`parse_fleet`); reading the file is
``engine.runtime.fleet_file``'s job.
"""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from engine.domain.durations import Duration
from engine.domain.errors import FieldError, InvalidInputError, field_errors_from_pydantic
from engine.domain.member import Member
from engine.domain.model import DomainModel
from engine.domain.names import ClusterNameStr, ResourceNameStr


class NetworkMode(str, enum.Enum):
    FLAT = "flat"
    OVERLAY = "overlay"


class FaultKind(str, enum.Enum):
    FAIL = "fail"
    HANG = "hang"
    SLOW = "slow"
    MESH_PARTITION = "meshPartition"
    ENDPOINTS_LOST = "endpointsLost"
    API_UNAVAILABLE = "apiUnavailable"


class FaultTrigger(str, enum.Enum):
    CONTROL_PLANE_UPGRADE = "controlPlaneUpgrade"
    CILIUM_UPGRADE = "ciliumUpgrade"
    AFTER_UPGRADE = "afterUpgrade"
    JOIN = "join"


class Fault(DomainModel):
    """A fault to inject: what happens (``kind``) and when (``on`` or ``atSimTime``)."""

    kind: FaultKind
    on: FaultTrigger | None = None
    at_sim_time: float | None = Field(default=None, ge=0)
    message: str = "injected fault"
    times: int = Field(default=1, ge=1)
    factor: float = Field(default=2.0, gt=0)
    peers: list[ClusterNameStr] | None = None
    duration: Duration | None = None
    service: str | None = None

    @model_validator(mode="after")
    def _one_trigger(self) -> Fault:
        if (self.on is None) == (self.at_sim_time is None):
            raise ValueError("exactly one of 'on' and 'atSimTime' must be set")
        return self


class SimulatedCluster(Member):
    """A member plus what only the simulation needs to know about it."""

    network_mode: NetworkMode = NetworkMode.FLAT
    acns: bool = True
    self_managed_mesh: bool = False
    nodes: int = Field(default=3, ge=1)
    faults: list[Fault] = Field(default_factory=list)


class Durations(DomainModel):
    """Simulated durations of the slow operations (before ``timeScale``)."""

    control_plane_upgrade: Duration = Field(default_factory=lambda: _seconds(600))
    cilium_upgrade: Duration = Field(default_factory=lambda: _seconds(120))
    mesh_propagation: Duration = Field(default_factory=lambda: _seconds(10))
    agent_restart: Duration = Field(default_factory=lambda: _seconds(20))


def _seconds(value: float) -> Duration:
    import datetime as dt

    return dt.timedelta(seconds=value)


class NetworkSpec(DomainModel):
    name: ResourceNameStr
    members: list[ClusterNameStr] = Field(default_factory=list)


class GlobalServiceSpec(DomainModel):
    """A service annotated global; ``clusters`` maps cluster -> ready endpoints there."""

    namespace: str
    name: str
    clusters: dict[ClusterNameStr, int]
    min_ready_endpoints: int = Field(default=1, ge=0)
    #: Whether the namespace carries clustermesh.cilium.io/global (false reproduces the
    #: common mistake of a global service in a non-global namespace).
    namespace_global: bool = True


class FleetSpec(DomainModel):
    time_scale: float = Field(default=0.02, ge=0)
    durations: Durations = Field(default_factory=Durations)
    clusters: list[SimulatedCluster] = Field(min_length=1)
    networks: list[NetworkSpec] = Field(default_factory=list)
    global_services: list[GlobalServiceSpec] = Field(default_factory=list)


class FleetMetadata(DomainModel):
    name: ResourceNameStr


class SimulatedFleet(DomainModel):
    """The whole fleet file."""

    api_version: Literal["meshfleet.io/v1alpha1"]
    kind: Literal["SimulatedFleet"]
    metadata: FleetMetadata
    spec: FleetSpec

    def cross_check(self) -> list[FieldError]:
        """Rules that span several fields: unique names and ids, known references."""
        errors: list[FieldError] = []
        seen: dict[str, int] = {}
        ids: dict[int, str] = {}
        for index, cluster in enumerate(self.spec.clusters):
            if cluster.name in seen:
                errors.append(
                    FieldError(
                        path=f"spec.clusters[{index}].name",
                        message=f"duplicate cluster name {cluster.name!r} "
                        f"(also spec.clusters[{seen[cluster.name]}])",
                    )
                )
            seen.setdefault(cluster.name, index)
            if cluster.cluster_id is not None:
                if cluster.cluster_id in ids:
                    errors.append(
                        FieldError(
                            path=f"spec.clusters[{index}].clusterId",
                            message=f"cluster id {cluster.cluster_id} is also used by "
                            f"{ids[cluster.cluster_id]!r}",
                        )
                    )
                ids.setdefault(cluster.cluster_id, cluster.name)
        member_of: dict[str, str] = {}
        for n, network in enumerate(self.spec.networks):
            for m, member in enumerate(network.members):
                path = f"spec.networks[{n}].members[{m}]"
                if member not in seen:
                    errors.append(FieldError(path=path, message=f"unknown cluster {member!r}"))
                elif member in member_of:
                    errors.append(
                        FieldError(
                            path=path,
                            message=f"cluster {member!r} is already a member of network "
                            f"{member_of[member]!r} (a cluster belongs to at most one network)",
                        )
                    )
                member_of.setdefault(member, network.name)
        for s, service in enumerate(self.spec.global_services):
            for cluster_name in service.clusters:
                if cluster_name not in seen:
                    errors.append(
                        FieldError(
                            path=f"spec.globalServices[{s}].clusters.{cluster_name}",
                            message=f"unknown cluster {cluster_name!r}",
                        )
                    )
        return errors


def parse_fleet(document: object, source: str | None = None) -> SimulatedFleet:
    """Validate a parsed fleet document; every problem at once as InvalidInputError."""
    try:
        fleet = SimulatedFleet.model_validate(document)
    except ValidationError as error:
        raise InvalidInputError(
            field_errors_from_pydantic(error, model=SimulatedFleet), source=source
        ) from None
    problems = fleet.cross_check()
    if problems:
        raise InvalidInputError(problems, source=source)
    return fleet
