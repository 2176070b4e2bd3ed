"""A run's status tree as the plan lays it out, and the strategy a run without one follows."""

from __future__ import annotations

from engine.domain.member import Member
from engine.domain.plan import Plan, PlannedMemberState
from engine.domain.run import (
    AfterStageWaitStatus,
    GateKind,
    GateStatus,
    GroupStatus,
    MemberStatus,
    StageStatus,
    State,
)
from engine.domain.strategy import (
    Gate,
    GroupSpec,
    StageSpec,
    StrategyMetadata,
    StrategySpec,
    UpdateStrategy,
)


def _gates(gates: list[Gate], prefix: str) -> list[GateStatus]:
    found = []
    for index, gate in enumerate(gates):
        gate_id = f"{prefix}/{index}"
        found.append(
            GateStatus(
                id=gate_id,
                display_name=gate.display_name or gate_id,
                kind=GateKind.of(gate.type),
                start_day=gate.start_day.value if gate.start_day else None,
                start_time=gate.start_time,
                utc_offset=gate.utc_offset,
            )
        )
    return found


def status_from_plan(run_plan: Plan) -> list[StageStatus]:
    """The status tree of a fresh run: every stage, group, member and gate NotStarted."""
    stages = []
    for stage in run_plan.stages:
        groups = []
        for group in stage.groups:
            members = [
                MemberStatus(
                    name=m.name,
                    state=State.SKIPPED
                    if m.state is PlannedMemberState.SKIPPED
                    else State.NOT_STARTED,
                    message="already at the target"
                    if m.state is PlannedMemberState.SKIPPED
                    else None,
                    from_=m.from_,
                    to=m.to,
                    hops=m.hops,
                )
                for m in group.members
            ]
            groups.append(
                GroupStatus(
                    name=group.name,
                    max_concurrency=group.max_concurrency,
                    max_allowed_failures=group.max_allowed_failures,
                    before_gates=_gates(group.before_gates, f"{stage.name}/{group.name}/before"),
                    after_gates=_gates(group.after_gates, f"{stage.name}/{group.name}/after"),
                    members=members,
                )
            )
        stages.append(
            StageStatus(
                name=stage.name,
                depends_on=stage.depends_on,
                max_concurrency=stage.max_concurrency,
                max_allowed_failures=stage.max_allowed_failures,
                before_gates=_gates(stage.before_gates, f"{stage.name}/before"),
                after_gates=_gates(stage.after_gates, f"{stage.name}/after"),
                after_stage_wait=(
                    AfterStageWaitStatus(seconds=stage.after_stage_wait_seconds)
                    if stage.after_stage_wait_seconds
                    else None
                ),
                groups=groups,
            )
        )
    return stages


def one_by_one_strategy(members: list[Member]) -> UpdateStrategy:
    """Fleet's behaviour with no strategy: every member, one at a time."""
    return UpdateStrategy(
        metadata=StrategyMetadata(name="one-by-one"),
        spec=StrategySpec(
            stages=[
                StageSpec(
                    name="all",
                    groups=[GroupSpec(name="all", members=[m.name for m in members])],
                )
            ]
        ),
    )
