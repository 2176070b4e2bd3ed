"""The plan: exactly what an update run will execute, in order.

``meshfleet plan`` prints it and the run workflow executes it, so both read
the same model. ``Plan.to_json_dict()`` is the JSON form the CLI prints;
``planHash`` is the sha256 of that JSON without the hash (computed by
``strategies.plan_hash``), so two plans with the same hash are the same plan.
"""

from __future__ import annotations

import enum

from pydantic import Field

from engine.domain.model import DomainModel
from engine.domain.strategy import Gate


class PlannedMemberState(str, enum.Enum):
    """What the plan intends for a member (run states are in ``engine.domain.run``)."""

    PLANNED = "Planned"
    #: Already at the target: nothing to do (Fleet's "Skipped").
    SKIPPED = "Skipped"


class VersionPair(DomainModel):
    """The two versions a member runs: its control plane and its bundled Cilium."""

    kubernetes_version: str
    cilium_version: str


class MemberPlan(DomainModel):
    """One member's planned update: from, to, and the hops in between.

    Each hop is one minor step of the control plane with the Cilium version the
    catalog bundles with it; the last hop equals ``to``. A Skipped member has
    no hops.
    """

    name: str
    state: PlannedMemberState
    from_: VersionPair = Field(alias="from")
    to: VersionPair
    hops: list[VersionPair] = Field(default_factory=list)


class DeclaredLimits(DomainModel):
    """The values as the strategy wrote them (the plan's numbers are effective ones)."""

    max_concurrency: str | None = None
    max_allowed_failures: str | None = None


class GroupPlan(DomainModel):
    """A group: its members in execution order and its effective limits."""

    name: str
    #: Members in flight at once in this group (already capped by the stage).
    max_concurrency: int
    #: Failures the group absorbs before it fails (0 = fail at the first).
    max_allowed_failures: int
    declared: DeclaredLimits = Field(default_factory=DeclaredLimits)
    before_gates: list[Gate] = Field(default_factory=list)
    after_gates: list[Gate] = Field(default_factory=list)
    members: list[MemberPlan] = Field(default_factory=list)


class StageDeclared(DeclaredLimits):
    """A stage's values as written, including its soak."""

    after_stage_wait: str | None = None


class StagePlan(DomainModel):
    """A stage: its resolved dependencies, gates, soak, limits and groups."""

    name: str
    #: Stages that must complete first (already resolved: never "the previous one").
    depends_on: list[str] = Field(default_factory=list)
    #: Members in flight at once across all the stage's groups together.
    max_concurrency: int
    max_allowed_failures: int
    after_stage_wait_seconds: int = 0
    declared: StageDeclared = Field(default_factory=StageDeclared)
    before_gates: list[Gate] = Field(default_factory=list)
    after_gates: list[Gate] = Field(default_factory=list)
    groups: list[GroupPlan] = Field(default_factory=list)

    def member_names(self) -> list[str]:
        """Every member of the stage, group by group, in execution order."""
        return [member.name for group in self.groups for member in group.members]


class PlanWarning(DomainModel):
    """Something worth a look that does not stop the plan (an empty group, say)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class Plan(DomainModel):
    """Stages in a topological order, plus warnings and the plan's hash."""

    stages: list[StagePlan]
    warnings: list[PlanWarning] = Field(default_factory=list)
    plan_hash: str = ""

    def stage(self, name: str) -> StagePlan:
        """The stage called ``name`` (KeyError when there is none)."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def members(self) -> list[MemberPlan]:
        """Every planned member, stage by stage, in execution order."""
        return [m for stage in self.stages for group in stage.groups for m in group.members]
