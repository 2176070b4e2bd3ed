"""A fleet member as the planner sees it."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator, Field

from engine.domain.model import DomainModel
from engine.domain.names import ClusterNameStr
from engine.domain.versions import VersionStr
from engine.domain.windows import MaintenanceWindow


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as error:
        raise ValueError(f"must be a network in CIDR notation ({error})") from None
    return value


CidrStr = Annotated[str, AfterValidator(_cidr)]


class Member(DomainModel):
    """A cluster that takes part in planning: who it is, where it is, what it runs."""

    name: ClusterNameStr
    labels: dict[str, str] = Field(default_factory=dict)
    update_group: str | None = None
    kubernetes_version: VersionStr
    cilium_version: VersionStr
    cluster_id: int | None = Field(default=None, ge=1, le=255)
    pod_cidrs: list[CidrStr] = Field(default_factory=list, alias="podCIDRs")
    maintenance_window: MaintenanceWindow | None = None
