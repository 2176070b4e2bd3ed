"""The planner: (members, strategy, target, catalog, now) -> the plan a run executes.

A pure, deterministic function: the same inputs always give the same plan
and the same ``planHash``. ``now`` is a parameter because maintenance windows
decide who goes first inside a group; a workflow passes ``workflow.now()``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence

from engine.domain.durations import format_duration
from engine.domain.errors import FieldError, InvalidInputError
from engine.domain.member import Member
from engine.domain.plan import (
    DeclaredLimits,
    GroupPlan,
    MemberPlan,
    Plan,
    StageDeclared,
    StagePlan,
)
from engine.domain.strategy import StageSpec, UpdateStrategy
from engine.domain.versions import Version
from strategies.catalog import ReleaseCatalog
from strategies.concurrency import (
    failure_budget,
    group_concurrency,
    parse_concurrency,
    parse_failures,
    stage_concurrency,
)
from strategies.topology import resolve_dependencies, topological_order
from strategies.upgrades import VersionPath, VersionPathError, skew_problems, version_path
from strategies.validation import GroupKey, place_members, validate_strategy
from strategies.windows import member_order_key


def plan_hash(plan: Plan) -> str:
    """sha256 of the plan's canonical JSON (sorted keys, no spaces), without the hash."""
    document = plan.to_json_dict()
    document.pop("planHash", None)
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _member_errors(members: Sequence[Member]) -> list[FieldError]:
    errors: list[FieldError] = []
    seen: dict[str, int] = {}
    for index, member in enumerate(members):
        if member.name in seen:
            errors.append(
                FieldError(
                    path=f"members[{index}].name",
                    message=f"duplicate member name {member.name!r} "
                    f"(also members[{seen[member.name]}])",
                )
            )
        seen.setdefault(member.name, index)
    return errors


def _members_path(names: list[str], shown: int = 5) -> str:
    """``members.a`` for one member; ``members.a, b, c and 12 more (15 members)`` for many."""
    if len(names) == 1:
        return f"members.{names[0]}"
    listed = ", ".join(names[:shown])
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"members.{listed}{more} ({len(names)} members)"


def _stage_plan(
    stage: StageSpec,
    stage_index: int,
    depends_on: list[str],
    groups: dict[GroupKey, list[Member]],
    paths: dict[str, VersionPath],
    now: dt.datetime,
) -> StagePlan:
    own = [(key, chosen) for key, chosen in groups.items() if key.stage_index == stage_index]
    stage_size = sum(len(chosen) for _key, chosen in own)
    stage_limit = stage_concurrency(
        parse_concurrency(stage.max_concurrency) if stage.max_concurrency else None, stage_size
    )
    group_plans: list[GroupPlan] = []
    for key, chosen in own:
        spec = stage.groups[key.group_index]
        ordered = sorted(chosen, key=lambda m: member_order_key(m.maintenance_window, m.name, now))
        group_plans.append(
            GroupPlan(
                name=spec.name,
                max_concurrency=group_concurrency(
                    parse_concurrency(spec.max_concurrency) if spec.max_concurrency else None,
                    len(chosen),
                    stage_limit,
                ),
                max_allowed_failures=failure_budget(
                    parse_failures(spec.max_allowed_failures)
                    if spec.max_allowed_failures
                    else None,
                    len(chosen),
                ),
                declared=DeclaredLimits(
                    max_concurrency=spec.max_concurrency,
                    max_allowed_failures=spec.max_allowed_failures,
                ),
                before_gates=spec.before_gates,
                after_gates=spec.after_gates,
                members=[
                    MemberPlan(
                        name=member.name,
                        state=paths[member.name].state,
                        from_=paths[member.name].start,
                        to=paths[member.name].end,
                        hops=paths[member.name].hops,
                    )
                    for member in ordered
                ],
            )
        )
    return StagePlan(
        name=stage.name,
        depends_on=depends_on,
        max_concurrency=stage_limit,
        max_allowed_failures=failure_budget(
            parse_failures(stage.max_allowed_failures) if stage.max_allowed_failures else None,
            stage_size,
        ),
        after_stage_wait_seconds=(
            0 if stage.after_stage_wait is None else int(stage.after_stage_wait.total_seconds())
        ),
        declared=StageDeclared(
            max_concurrency=stage.max_concurrency,
            max_allowed_failures=stage.max_allowed_failures,
            after_stage_wait=(
                None if stage.after_stage_wait is None else format_duration(stage.after_stage_wait)
            ),
        ),
        before_gates=stage.before_gates,
        after_gates=stage.after_gates,
        groups=group_plans,
    )


def plan(
    members: Sequence[Member],
    strategy: UpdateStrategy,
    target: Version | None,
    catalog: ReleaseCatalog,
    now: dt.datetime,
    *,
    allow_multi_minor: bool = False,
) -> Plan:
    """Plan an update run of ``members`` to Kubernetes ``target`` under ``strategy``.

    ``target`` None plans a node-image-only run (no version hops). ``now``
    must be timezone-aware. Raise InvalidInputError listing every problem at
    once: strategy rules, members in no group or in two, a target the release
    catalog lacks (its minor or its patch: one error, not one per member),
    version paths (downgrades, multi-minor jumps without ``allow_multi_minor``;
    members refused for the same reason share one error) and, once the plan
    is built, Cilium version skew. Hops without a patch name the catalog's
    latest known patch of their minor.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    errors = _member_errors(members)
    errors += validate_strategy(strategy)
    placement = place_members(strategy, members)
    errors += placement.errors
    paths: dict[str, VersionPath] = {}
    problem = None if target is None else catalog.target_problem(target)
    if problem is not None:
        # One line for the target, not one per member that cannot reach it.
        errors.append(FieldError(path="target", message=problem))
    else:
        refused: dict[str, list[str]] = {}
        for member in members:
            try:
                paths[member.name] = version_path(
                    member, target, catalog, allow_multi_minor=allow_multi_minor
                )
            except VersionPathError as error:
                refused.setdefault(str(error), []).append(member.name)
        errors += [
            FieldError(path=_members_path(names), message=message)
            for message, names in refused.items()
        ]
    if errors:
        raise InvalidInputError(errors)

    dependencies = resolve_dependencies(strategy.spec.stages)
    index_of = {stage.name: index for index, stage in enumerate(strategy.spec.stages)}
    stages = [
        _stage_plan(
            strategy.spec.stages[index_of[name]],
            index_of[name],
            dependencies[name],
            placement.groups,
            paths,
            now,
        )
        for name in topological_order(dependencies)
    ]
    result = Plan(stages=stages, warnings=list(placement.warnings))
    skew = [
        FieldError(path=f"spec.stages[{index_of[problem.stage]}]", message=str(problem))
        for problem in skew_problems(result)
    ]
    if skew:
        raise InvalidInputError(skew)
    return result.model_copy(update={"plan_hash": plan_hash(result)})
