"""What a person asks for when they start an update run (its status is in ``run.py``)."""

from __future__ import annotations

import enum

from pydantic import model_validator

from engine.domain.model import DomainModel
from engine.domain.names import ResourceNameStr
from engine.domain.schedule import FleetWindow
from engine.domain.strategy import UpdateStrategy
from engine.domain.versions import VersionStr


class UpgradeType(str, enum.Enum):
    """Fleet's ``managedClusterUpdate.upgrade.type``."""

    #: Control plane, then node pools; needs a target Kubernetes version.
    FULL = "Full"
    #: Control plane only; needs a target Kubernetes version.
    CONTROL_PLANE_ONLY = "ControlPlaneOnly"
    #: Node images only; must not name a Kubernetes version.
    NODE_IMAGE_ONLY = "NodeImageOnly"


class RunSpec(DomainModel):
    """One update run's request: which network, to what, in which order.

    The strategy is given inline (``strategy``) or by name (``strategyRef``,
    snapshotted when the run is created, as Fleet does), never both; with
    neither, every member updates one by one. A jump of two or more minors is
    refused unless ``allowMultiMinor`` turns it into consecutive hops.
    """

    name: ResourceNameStr | None = None
    network: ResourceNameStr
    kubernetes_version: VersionStr | None = None
    upgrade_type: UpgradeType = UpgradeType.FULL
    strategy: UpdateStrategy | None = None
    strategy_ref: ResourceNameStr | None = None
    allow_multi_minor: bool = False
    #: A fleet-level window (an auto-upgrade profile's): no member starts while it is
    #: closed; members in flight finish and the run waits, Pending, for the next opening.
    fleet_window: FleetWindow | None = None

    @model_validator(mode="after")
    def _consistent(self) -> RunSpec:
        problems = []
        if self.strategy is not None and self.strategy_ref is not None:
            problems.append("set either strategy or strategyRef, not both")
        if self.upgrade_type is UpgradeType.NODE_IMAGE_ONLY:
            if self.kubernetes_version is not None:
                problems.append("upgradeType NodeImageOnly must not set kubernetesVersion")
        elif self.kubernetes_version is None:
            problems.append(f"upgradeType {self.upgrade_type.value} needs kubernetesVersion")
        if problems:
            raise ValueError("; ".join(problems))
        return self
