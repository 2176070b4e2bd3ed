"""Strategy files: the native format, Azure Fleet's JSON, and export back to Fleet.

The native format (``apiVersion: meshfleet.io/v1alpha1``, ``kind:
UpdateStrategy``) is YAML or JSON. An Azure Fleet strategy is the JSON that
``az fleet updatestrategy show`` prints (``strategy.stages[]``), the ARM
resource (``properties.strategy``) or a bare ``{"stages": [...]}``; the kind
is detected from the document. Only ``load_strategy`` reads a file.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from engine.domain.errors import FieldError, InvalidInputError, field_errors_from_pydantic
from engine.domain.model import DomainModel
from engine.domain.strategy import (
    Gate,
    GateType,
    GroupSpec,
    HealthSpec,
    QuantityText,
    StageSpec,
    StrategyMetadata,
    StrategySpec,
    UpdateStrategy,
)
from engine.domain.windows import DayOfWeek
from strategies.files import read_document
from strategies.topology import CycleError, resolve_dependencies, topological_order
from strategies.validation import validate_strategy

#: The name given to an imported Fleet strategy that carries none.
IMPORTED_NAME = "imported"


class StrategyFormat(str, enum.Enum):
    """The strategy file kinds meshfleet reads."""

    NATIVE = "native"
    AZURE_FLEET = "azureFleet"


# Azure Fleet's shapes. Inside the strategy unknown fields are errors (so nothing
# is dropped silently); around it (id, eTag, systemData...) they are ignored.


class _FleetScheduledStart(DomainModel):
    start_day: DayOfWeek | None = None
    start_time: str | None = None
    utc_offset: str | None = None


class _FleetGate(DomainModel):
    type: GateType
    display_name: str | None = None
    scheduled_start_configuration: _FleetScheduledStart | None = None


class _FleetMemberSelector(DomainModel):
    by_label: str


class _FleetGroup(DomainModel):
    name: str
    max_concurrency: QuantityText | None = None
    max_allowed_failures: QuantityText | None = None
    before_gates: list[_FleetGate] = Field(default_factory=list)
    after_gates: list[_FleetGate] = Field(default_factory=list)
    member_selector: _FleetMemberSelector | None = None


class _FleetStage(DomainModel):
    name: str
    groups: list[_FleetGroup] = Field(default_factory=list)
    after_stage_wait_in_seconds: int | None = Field(default=None, ge=0)
    max_concurrency: QuantityText | None = None
    max_allowed_failures: QuantityText | None = None
    before_gates: list[_FleetGate] = Field(default_factory=list)
    after_gates: list[_FleetGate] = Field(default_factory=list)
    member_selector: _FleetMemberSelector | None = None


class _FleetStrategy(DomainModel):
    stages: list[_FleetStage] = Field(default_factory=list)


def detect_format(document: object) -> StrategyFormat:
    """Native when it has ``apiVersion``/``kind``; Azure Fleet when it has stages under
    ``strategy``, ``properties.strategy`` or at the top. Raise InvalidInputError otherwise.
    """
    if isinstance(document, Mapping):
        if "apiVersion" in document or "kind" in document:
            return StrategyFormat.NATIVE
        if _fleet_strategy(document) is not None:
            return StrategyFormat.AZURE_FLEET
    raise InvalidInputError(
        [
            FieldError(
                path="",
                message="not a strategy: expected a native strategy (apiVersion "
                "meshfleet.io/v1alpha1, kind UpdateStrategy) or an Azure Fleet strategy "
                "(strategy.stages, as 'az fleet updatestrategy show' prints it)",
            )
        ]
    )


def _fleet_strategy(document: Mapping[str, Any]) -> tuple[str, object] | None:
    """Where the Fleet strategy object sits: (path prefix, object)."""
    if isinstance(document.get("strategy"), Mapping):
        return "strategy", document["strategy"]
    properties = document.get("properties")
    if isinstance(properties, Mapping) and isinstance(properties.get("strategy"), Mapping):
        return "properties.strategy", properties["strategy"]
    if "stages" in document:
        return "", document
    return None


def _gate_from_fleet(gate: _FleetGate) -> Gate:
    config = gate.scheduled_start_configuration
    return Gate(
        type=gate.type,
        display_name=gate.display_name,
        start_day=config.start_day if config else None,
        start_time=config.start_time if config else None,
        utc_offset=config.utc_offset if config else None,
    )


def strategy_from_fleet(document: Mapping[str, Any], source: str | None = None) -> UpdateStrategy:
    """Import an Azure Fleet strategy into the native model (shape checked, rules not).

    Fleet's stages run one after another, which is the native default, so no
    ``dependsOn`` is written. A stage's ``memberSelector`` is joined (AND) to
    each of its groups' selectors, since native stages have no selector.
    """
    found = _fleet_strategy(document)
    if found is None:
        detect_format(document)  # raises the "not a strategy" error
        raise AssertionError("unreachable")  # pragma: no cover
    prefix, strategy_object = found
    name = document.get("name") if isinstance(document.get("name"), str) else None
    try:
        fleet = _FleetStrategy.model_validate(strategy_object)
    except ValidationError as error:
        raise InvalidInputError(
            field_errors_from_pydantic(error, prefix, model=_FleetStrategy), source=source
        ) from None
    errors: list[FieldError] = []
    stages: list[StageSpec] = []
    for s, stage in enumerate(fleet.stages):
        groups: list[GroupSpec] = []
        stage_selector = stage.member_selector.by_label if stage.member_selector else None
        for group in stage.groups:
            selector = group.member_selector.by_label if group.member_selector else None
            if stage_selector is not None:
                if selector is None:
                    errors.append(
                        FieldError(
                            path=f"{prefix}.stages[{s}].memberSelector".lstrip("."),
                            message=f"group {group.name!r} has no memberSelector: meshfleet can "
                            "join a stage's selector only to group selectors",
                        )
                    )
                    continue
                selector = ",".join(part for part in (stage_selector, selector) if part.strip())
            groups.append(
                GroupSpec(
                    name=group.name,
                    selector=selector,
                    max_concurrency=group.max_concurrency,
                    max_allowed_failures=group.max_allowed_failures,
                    before_gates=[_gate_from_fleet(g) for g in group.before_gates],
                    after_gates=[_gate_from_fleet(g) for g in group.after_gates],
                )
            )
        stages.append(
            StageSpec(
                name=stage.name,
                max_concurrency=stage.max_concurrency,
                max_allowed_failures=stage.max_allowed_failures,
                after_stage_wait=(
                    dt.timedelta(seconds=stage.after_stage_wait_in_seconds)
                    if stage.after_stage_wait_in_seconds
                    else None
                ),
                before_gates=[_gate_from_fleet(g) for g in stage.before_gates],
                after_gates=[_gate_from_fleet(g) for g in stage.after_gates],
                groups=groups,
            )
        )
    if errors:
        raise InvalidInputError(errors, source=source)
    return UpdateStrategy(
        metadata=StrategyMetadata(name=name or IMPORTED_NAME),
        spec=StrategySpec(stages=stages),
    )


def default_strategy() -> UpdateStrategy:
    """What a run without a strategy does (as in Fleet): every member, one by one."""
    return UpdateStrategy(
        metadata=StrategyMetadata(name="one-by-one"),
        # The empty selector matches every member; the group default runs one at a time.
        spec=StrategySpec(
            stages=[StageSpec(name="all", groups=[GroupSpec(name="all", selector="")])]
        ),
    )


def parse_strategy(
    document: object, source: str | None = None, *, check_rules: bool = True
) -> UpdateStrategy:
    """A strategy from a parsed document of either kind.

    With ``check_rules`` (the default) every rule of ``validate_strategy`` is
    checked too; the planner checks them again together with the members, so
    callers that plan right away pass False to get all problems in one list.
    Raise InvalidInputError listing every problem.
    """
    kind = detect_format(document)
    assert isinstance(document, Mapping)
    if kind is StrategyFormat.AZURE_FLEET:
        strategy = strategy_from_fleet(document, source)
    else:
        try:
            strategy = UpdateStrategy.model_validate(document)
        except ValidationError as error:
            raise InvalidInputError(
                field_errors_from_pydantic(error, model=UpdateStrategy), source=source
            ) from None
    if check_rules:
        problems = validate_strategy(strategy)
        if problems:
            raise InvalidInputError(problems, source=source)
    return strategy


def load_strategy(path: Path, *, check_rules: bool = True) -> UpdateStrategy:
    """Read a strategy file (native YAML/JSON or Azure Fleet JSON) and parse it."""
    return parse_strategy(read_document(path), source=str(path), check_rules=check_rules)


@dataclass(frozen=True)
class FleetExport:
    """A native strategy in Azure Fleet's JSON, and what could not be carried over."""

    document: dict[str, Any]
    not_exported: list[FieldError] = field(default_factory=list)


def _gate_to_fleet(gate: Gate) -> dict[str, Any]:
    exported: dict[str, Any] = {"type": gate.type.value}
    if gate.display_name is not None:
        exported["displayName"] = gate.display_name
    if gate.type is GateType.SCHEDULED_START:
        config = {
            "startDay": gate.start_day.value if gate.start_day else None,
            "startTime": gate.start_time,
            "utcOffset": gate.utc_offset or "+00:00",
        }
        exported["scheduledStartConfiguration"] = {k: v for k, v in config.items() if v}
    return exported


def _limits(max_concurrency: str | None, max_allowed_failures: str | None) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    if max_concurrency is not None:
        limits["maxConcurrency"] = max_concurrency
    if max_allowed_failures is not None:
        limits["maxAllowedFailures"] = max_allowed_failures
    return limits


def strategy_to_fleet(strategy: UpdateStrategy) -> FleetExport:
    """Export to Azure Fleet's strategy JSON where it fits; list what does not.

    Does not fit: a DAG (Fleet runs stages one after another: exported in a
    topological order), explicit member lists (Fleet matches groups by name or
    label), the health tuning (Fleet has no mesh health gates) and fractions
    of a second in ``afterStageWait``. Raise InvalidInputError for a strategy
    that breaks the rules.
    """
    problems = validate_strategy(strategy)
    if problems:
        raise InvalidInputError(problems)
    stages = strategy.spec.stages
    dependencies = resolve_dependencies(stages)
    try:
        order = topological_order(dependencies)
    except CycleError as error:  # pragma: no cover - validate_strategy reports cycles
        raise InvalidInputError([FieldError(path="spec.stages", message=str(error))]) from None
    index_of = {stage.name: index for index, stage in enumerate(stages)}
    not_exported: list[FieldError] = []
    exported_stages: list[dict[str, Any]] = []
    for position, name in enumerate(order):
        s = index_of[name]
        stage = stages[s]
        path = f"spec.stages[{s}]"
        chain = [order[position - 1]] if position else []
        if dependencies[name] != chain:
            not_exported.append(
                FieldError(
                    path=f"{path}.dependsOn",
                    message=f"depends on {dependencies[name] or 'nothing'}; Fleet runs stages one "
                    f"after another, so it runs after {chain or 'nothing'} instead",
                )
            )
        groups: list[dict[str, Any]] = []
        for g, group in enumerate(stage.groups):
            exported_group: dict[str, Any] = {"name": group.name}
            if group.members is not None:
                not_exported.append(
                    FieldError(
                        path=f"{path}.groups[{g}].members",
                        message="Fleet has no member lists; in Fleet the group takes the members "
                        f"whose update group is {group.name!r}",
                    )
                )
            if group.selector is not None:
                exported_group["memberSelector"] = {"byLabel": group.selector}
            exported_group |= _limits(group.max_concurrency, group.max_allowed_failures)
            if group.before_gates:
                exported_group["beforeGates"] = [_gate_to_fleet(g) for g in group.before_gates]
            if group.after_gates:
                exported_group["afterGates"] = [_gate_to_fleet(g) for g in group.after_gates]
            groups.append(exported_group)
        exported_stage: dict[str, Any] = {"name": stage.name, "groups": groups}
        if stage.after_stage_wait is not None:
            seconds = stage.after_stage_wait.total_seconds()
            exported_stage["afterStageWaitInSeconds"] = int(seconds)
            if seconds != int(seconds):
                not_exported.append(
                    FieldError(
                        path=f"{path}.afterStageWait",
                        message="Fleet counts whole seconds; the fraction is dropped",
                    )
                )
        exported_stage |= _limits(stage.max_concurrency, stage.max_allowed_failures)
        if stage.before_gates:
            exported_stage["beforeGates"] = [_gate_to_fleet(g) for g in stage.before_gates]
        if stage.after_gates:
            exported_stage["afterGates"] = [_gate_to_fleet(g) for g in stage.after_gates]
        exported_stages.append(exported_stage)
    if "health" in strategy.spec.model_fields_set and strategy.spec.health != HealthSpec():
        not_exported.append(
            FieldError(
                path="spec.health",
                message="Fleet has no mesh health gates; this tuning stays with meshfleet",
            )
        )
    return FleetExport(
        document={"name": strategy.metadata.name, "strategy": {"stages": exported_stages}},
        not_exported=not_exported,
    )
