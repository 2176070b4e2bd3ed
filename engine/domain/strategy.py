"""The native update strategy (``kind: UpdateStrategy``): what a strategy file says.

These models check the *shape* of a strategy (types, known fields). The rules
that span fields or need the exact patterns — name rules, unique names,
``dependsOn`` targets, cycles, concurrency patterns, gate placement — live in
``strategies.validation`` so that every broken rule is reported at once,
instead of the first pydantic error hiding the rest.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Literal, NewType

from pydantic import BeforeValidator, Field

from engine.domain.durations import Duration
from engine.domain.model import DomainModel
from engine.domain.windows import DayOfWeek

#: A Kubernetes label selector as written (``region in (eu,us),ring!=canary``).
SelectorText = NewType("SelectorText", str)


def _quantity_text(value: object) -> object:
    # YAML users write ``maxConcurrency: 2``; Fleet writes "2". Both mean the same.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


#: ``"N"`` or ``"P%"`` as written (maxConcurrency, maxAllowedFailures), a bare integer
#: accepted; ``strategies.validation`` checks it and ``strategies.concurrency`` parses it
#: into a ``Quantity``.
QuantityText = Annotated[str, BeforeValidator(_quantity_text)]


class GateType(str, enum.Enum):
    """Gates a person (Approval) or the clock (ScheduledStart) completes."""

    APPROVAL = "Approval"
    SCHEDULED_START = "ScheduledStart"


class Gate(DomainModel):
    """A gate before or after a stage or group.

    ``ScheduledStart`` gates wait for the next ``startDay`` at ``startTime`` in
    ``utcOffset`` (Fleet's ``scheduledStartConfiguration``, written flat here).
    """

    type: GateType
    display_name: str | None = None
    start_day: DayOfWeek | None = None
    start_time: str | None = None
    utc_offset: str | None = None


class GroupSpec(DomainModel):
    """Members that update together; groups of a stage run in parallel.

    Members come from ``members`` (names), from ``selector`` (labels), or, when
    neither is set, from members whose ``updateGroup`` equals the group name.
    """

    name: str
    members: list[str] | None = None
    selector: SelectorText | None = None
    max_concurrency: QuantityText | None = None
    max_allowed_failures: QuantityText | None = None
    before_gates: list[Gate] = Field(default_factory=list)
    after_gates: list[Gate] = Field(default_factory=list)


class StageSpec(DomainModel):
    """A step of the run. ``dependsOn`` absent = the previous stage; ``[]`` = none."""

    name: str
    depends_on: list[str] | None = None
    max_concurrency: QuantityText | None = None
    max_allowed_failures: QuantityText | None = None
    after_stage_wait: Duration | None = None
    before_gates: list[Gate] = Field(default_factory=list)
    after_gates: list[Gate] = Field(default_factory=list)
    groups: list[GroupSpec] = Field(default_factory=list)


def _minutes(value: float) -> dt.timedelta:
    return dt.timedelta(minutes=value)


class HealthSpec(DomainModel):
    """How the built-in health gates are tuned (they can be tuned, never switched off)."""

    mesh_ready_timeout: Duration = Field(default_factory=lambda: _minutes(10))
    #: Default minimum of ready endpoints per global service, elsewhere in the mesh.
    min_ready_endpoints: int = Field(default=1, ge=0)
    soak_check_interval: Duration = Field(default_factory=lambda: _minutes(0.5))
    #: Start a run even when the plan has members the continuity rule can never let
    #: drain (a global service only their own copies can keep at its minimum): they
    #: wait at preflight and are given up. Off by default: ``run start`` and
    #: ``simulate`` refuse such a plan and name the members and services.
    allow_undrainable_members: bool = False


class StrategySpec(DomainModel):
    """The stages and the health tuning."""

    stages: list[StageSpec] = Field(default_factory=list)
    health: HealthSpec = Field(default_factory=HealthSpec)


class StrategyMetadata(DomainModel):
    """Who the strategy is."""

    name: str


class UpdateStrategy(DomainModel):
    """A whole strategy document in the native format."""

    api_version: Literal["meshfleet.io/v1alpha1"] = "meshfleet.io/v1alpha1"
    kind: Literal["UpdateStrategy"] = "UpdateStrategy"
    metadata: StrategyMetadata
    spec: StrategySpec
