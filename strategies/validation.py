"""Strategy rules, all reported at once, each with its field path.

``validate_strategy`` checks a strategy on its own; ``place_members`` checks
it against the members it will run over (every member in exactly one group).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.domain.errors import FieldError
from engine.domain.member import Member
from engine.domain.names import resource_name_problem
from engine.domain.plan import PlanWarning
from engine.domain.strategy import Gate, GateType, GroupSpec, UpdateStrategy
from engine.domain.windows import parse_time_of_day, parse_utc_offset
from strategies.concurrency import parse_concurrency, parse_failures
from strategies.selectors import LabelSelector, SelectorError, parse_selector
from strategies.topology import find_cycles, format_cycle, resolve_dependencies

#: Fleet's limit on groups per stage.
MAX_GROUPS_PER_STAGE = 50
MAX_GATE_DISPLAY_NAME = 100


def _gate_errors(gate: Gate, path: str, *, before: bool) -> list[FieldError]:
    errors: list[FieldError] = []
    if gate.display_name is not None and not 1 <= len(gate.display_name) <= MAX_GATE_DISPLAY_NAME:
        errors.append(
            FieldError(
                path=f"{path}.displayName",
                message=f"must be 1 to {MAX_GATE_DISPLAY_NAME} characters long",
            )
        )
    if gate.type is GateType.APPROVAL:
        for name, value in (
            ("startDay", gate.start_day),
            ("startTime", gate.start_time),
            ("utcOffset", gate.utc_offset),
        ):
            if value is not None:
                errors.append(
                    FieldError(
                        path=f"{path}.{name}",
                        message="only ScheduledStart gates take startDay, startTime and utcOffset",
                    )
                )
        return errors
    if not before:
        errors.append(
            FieldError(
                path=f"{path}.type",
                message="ScheduledStart is only allowed as a before-gate (beforeGates)",
            )
        )
    if gate.start_day is None:
        errors.append(
            FieldError(path=f"{path}.startDay", message="a ScheduledStart gate needs startDay")
        )
    if gate.start_time is None:
        errors.append(
            FieldError(path=f"{path}.startTime", message="a ScheduledStart gate needs startTime")
        )
    else:
        try:
            parse_time_of_day(gate.start_time)
        except ValueError as error:
            errors.append(FieldError(path=f"{path}.startTime", message=str(error)))
    if gate.utc_offset is not None:
        try:
            parse_utc_offset(gate.utc_offset)
        except ValueError as error:
            errors.append(FieldError(path=f"{path}.utcOffset", message=str(error)))
    return errors


def _gates_errors(
    before_gates: Sequence[Gate], after_gates: Sequence[Gate], path: str
) -> list[FieldError]:
    errors: list[FieldError] = []
    for index, gate in enumerate(before_gates):
        errors += _gate_errors(gate, f"{path}.beforeGates[{index}]", before=True)
    for index, gate in enumerate(after_gates):
        errors += _gate_errors(gate, f"{path}.afterGates[{index}]", before=False)
    return errors


def _limits_errors(
    max_concurrency: str | None, max_allowed_failures: str | None, path: str
) -> list[FieldError]:
    errors: list[FieldError] = []
    if max_concurrency is not None:
        try:
            parse_concurrency(max_concurrency)
        except ValueError as error:
            errors.append(FieldError(path=f"{path}.maxConcurrency", message=str(error)))
    if max_allowed_failures is not None:
        try:
            parse_failures(max_allowed_failures)
        except ValueError as error:
            errors.append(FieldError(path=f"{path}.maxAllowedFailures", message=str(error)))
    return errors


def _group_errors(group: GroupSpec, path: str) -> list[FieldError]:
    errors = _limits_errors(group.max_concurrency, group.max_allowed_failures, path)
    if group.members is not None and group.selector is not None:
        errors.append(
            FieldError(
                path=f"{path}.selector",
                message="set either members or selector, not both (with neither, the group "
                "takes the members whose updateGroup is its name)",
            )
        )
    if group.selector is not None:
        try:
            parse_selector(group.selector)
        except SelectorError as error:
            errors.append(FieldError(path=f"{path}.selector", message=f"invalid selector: {error}"))
    seen: set[str] = set()
    for index, member in enumerate(group.members or []):
        if member in seen:
            errors.append(
                FieldError(path=f"{path}.members[{index}]", message=f"{member!r} is listed twice")
            )
        seen.add(member)
    errors += _gates_errors(group.before_gates, group.after_gates, path)
    return errors


def validate_strategy(strategy: UpdateStrategy) -> list[FieldError]:
    """Every rule the strategy breaks on its own (empty when it is valid)."""
    errors: list[FieldError] = []
    problem = resource_name_problem(strategy.metadata.name)
    if problem:
        errors.append(FieldError(path="metadata.name", message=problem))
    stages = strategy.spec.stages
    if not stages:
        errors.append(FieldError(path="spec.stages", message="at least one stage is required"))
    # Stages and groups are separate namespaces (skip names its target's kind), but
    # each is unique across the whole strategy, as in Fleet.
    claimed: dict[str, dict[str, str]] = {"stage": {}, "group": {}}

    def claim(kind: str, name: str, path: str) -> None:
        problem = resource_name_problem(name)
        if problem:
            errors.append(FieldError(path=path, message=problem))
        names = claimed[kind]
        if name in names:
            errors.append(
                FieldError(
                    path=path,
                    message=f"{kind} name {name!r} is already used by {names[name]} "
                    f"({kind} names must be unique across the strategy)",
                )
            )
        else:
            names[name] = path

    stage_names = {stage.name for stage in stages}
    for s, stage in enumerate(stages):
        path = f"spec.stages[{s}]"
        claim("stage", stage.name, f"{path}.name")
        for d, dependency in enumerate(stage.depends_on or []):
            if dependency not in stage_names:
                errors.append(
                    FieldError(
                        path=f"{path}.dependsOn[{d}]", message=f"there is no stage {dependency!r}"
                    )
                )
        errors += _limits_errors(stage.max_concurrency, stage.max_allowed_failures, path)
        errors += _gates_errors(stage.before_gates, stage.after_gates, path)
        if not stage.groups:
            errors.append(
                FieldError(path=f"{path}.groups", message="a stage needs at least one group")
            )
        if len(stage.groups) > MAX_GROUPS_PER_STAGE:
            errors.append(
                FieldError(
                    path=f"{path}.groups",
                    message=f"has {len(stage.groups)} groups (at most {MAX_GROUPS_PER_STAGE})",
                )
            )
        for g, group in enumerate(stage.groups):
            group_path = f"{path}.groups[{g}]"
            claim("group", group.name, f"{group_path}.name")
            errors += _group_errors(group, group_path)
    index_of: dict[str, int] = {}
    for s, stage in enumerate(stages):
        index_of.setdefault(stage.name, s)
    for cycle in find_cycles(resolve_dependencies(stages)):
        errors.append(
            FieldError(
                path=f"spec.stages[{index_of[cycle[0]]}].dependsOn",
                message=f"stages depend on each other in a cycle: {format_cycle(cycle)}",
            )
        )
    return errors


@dataclass(frozen=True)
class GroupKey:
    """Where a group sits in the strategy."""

    stage_index: int
    group_index: int
    stage: str
    group: str

    @property
    def path(self) -> str:
        return f"spec.stages[{self.stage_index}].groups[{self.group_index}]"

    def __str__(self) -> str:
        return f"group {self.group!r} (stage {self.stage!r})"


@dataclass
class Placement:
    """Which members each group takes, and what is wrong with that."""

    groups: dict[GroupKey, list[Member]] = field(default_factory=dict)
    errors: list[FieldError] = field(default_factory=list)
    warnings: list[PlanWarning] = field(default_factory=list)


def _describe(member: Member) -> str:
    labels = ",".join(f"{k}={v}" for k, v in sorted(member.labels.items())) or "none"
    group = repr(member.update_group) if member.update_group else "none"
    return f"labels {labels}; updateGroup {group}"


def place_members(strategy: UpdateStrategy, members: Sequence[Member]) -> Placement:
    """Put every member in its group: each must land in exactly one.

    Lists every unplaced member and every member two groups claim (naming the
    groups), and warns about groups that take no member.
    """
    placement = Placement()
    by_name = {member.name: member for member in members}
    claimed: dict[str, list[GroupKey]] = {member.name: [] for member in members}
    broken_selector = False
    for s, stage in enumerate(strategy.spec.stages):
        for g, group in enumerate(stage.groups):
            key = GroupKey(s, g, stage.name, group.name)
            chosen: list[Member] = []
            selector_failed = False
            if group.members is not None:
                for m, name in enumerate(dict.fromkeys(group.members)):
                    if name in by_name:
                        chosen.append(by_name[name])
                    else:
                        placement.errors.append(
                            FieldError(
                                path=f"{key.path}.members[{m}]",
                                message=f"there is no member {name!r}",
                            )
                        )
            elif group.selector is not None:
                selector: LabelSelector | None
                try:
                    selector = parse_selector(group.selector)
                except SelectorError:
                    selector = None  # validate_strategy reports it
                    selector_failed = broken_selector = True
                if selector is not None:
                    chosen = [m for m in members if selector.matches(m.labels)]
            else:
                chosen = [m for m in members if m.update_group == group.name]
            placement.groups[key] = chosen
            for member in chosen:
                claimed[member.name].append(key)
            if not chosen and not selector_failed:
                placement.warnings.append(
                    PlanWarning(path=key.path, message=f"{key} matches no member")
                )
    for member in members:
        keys = claimed[member.name]
        if not keys and not broken_selector:
            placement.errors.append(
                FieldError(
                    path=f"members.{member.name}",
                    message=f"member {member.name!r} is in no group ({_describe(member)})",
                )
            )
        elif len(keys) > 1:
            placement.errors.append(
                FieldError(
                    path=f"members.{member.name}",
                    message=f"member {member.name!r} is matched by {len(keys)} groups: "
                    + ", ".join(str(k) for k in keys)
                    + " (a member belongs to exactly one group)",
                )
            )
    return placement
