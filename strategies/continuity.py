"""Members a run could never drain under the continuity rule, known before the run starts.

Preflight lets a member go only when every global service it serves keeps its
minimum of ready endpoints elsewhere in the mesh. A service whose minimum only
the member's own copies can meet blocks that member for ever: the run would
defer it and give up. Pure functions over the services' per-cluster counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from engine.domain.fleet import GlobalServiceSpec
from engine.domain.plan import Plan, PlannedMemberState
from engine.domain.services import GlobalService


@dataclass(frozen=True)
class ServiceCopies:
    """One global service: its declared minimum and its ready, shared copies per cluster."""

    key: str
    #: None: the strategy's ``health.minReadyEndpoints`` applies.
    min_ready_endpoints: int | None
    ready: dict[str, int]


def copies_from_backend(services: Iterable[GlobalService]) -> list[ServiceCopies]:
    """The backend's view: only global copies that export their backends count."""
    return [
        ServiceCopies(
            key=service.key,
            min_ready_endpoints=service.min_ready_endpoints,
            ready={
                cluster: state.ready_endpoints
                for cluster, state in service.per_cluster.items()
                if state.is_global and state.shared
            },
        )
        for service in services
    ]


def copies_from_fleet(services: Iterable[GlobalServiceSpec]) -> list[ServiceCopies]:
    """A simulated fleet file's services (a non-global namespace shares nothing)."""
    return [
        ServiceCopies(
            key=f"{service.namespace}/{service.name}",
            min_ready_endpoints=service.min_ready_endpoints,
            ready=dict(service.clusters) if service.namespace_global else {},
        )
        for service in services
    ]


@dataclass(frozen=True)
class UndrainableMember:
    """A planned member whose drain the continuity rule would never allow."""

    member: str
    service: str
    ready_elsewhere: int
    minimum: int

    def __str__(self) -> str:
        return (
            f"{self.member!r} can never be drained: global service {self.service} needs "
            f"{self.minimum} ready endpoint(s) elsewhere in the mesh and only "
            f"{self.ready_elsewhere} exist outside {self.member!r}"
        )

    def to_json_dict(self) -> dict[str, object]:
        """The JSON form ``meshfleet plan --output json`` prints."""
        return {
            "member": self.member,
            "service": self.service,
            "readyElsewhere": self.ready_elsewhere,
            "minReadyEndpoints": self.minimum,
            "message": str(self),
        }


def undrainable_members(
    plan: Plan, services: Sequence[ServiceCopies], default_minimum: int
) -> list[UndrainableMember]:
    """Planned members that serve a service no other member of the plan can keep up.

    Only the plan's members count as the mesh; members the plan skips (already
    at the target) are never drained and are not flagged.
    """
    mesh = {member.name for member in plan.members()}
    found: list[UndrainableMember] = []
    for member in plan.members():
        if member.state is not PlannedMemberState.PLANNED:
            continue
        for service in services:
            if service.ready.get(member.name, 0) <= 0:
                continue
            minimum = (
                service.min_ready_endpoints
                if service.min_ready_endpoints is not None
                else default_minimum
            )
            elsewhere = sum(
                count
                for cluster, count in service.ready.items()
                if cluster != member.name and cluster in mesh
            )
            if elsewhere < minimum:
                found.append(UndrainableMember(member.name, service.key, elsewhere, minimum))
    return found
