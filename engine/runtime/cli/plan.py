"""``meshfleet plan``: show exactly what an update run would do, before it runs.

Reads the members (from a live network through the workers' backend, as the
run will, or from a simulated-fleet file), the strategy and the target, and
prints the plan the run workflow will execute: a table, the JSON form, or the
stage DAG in Mermaid. Members the continuity rule could never let drain are
flagged (``run start`` and ``simulate`` refuse them unless the strategy opts out).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer
from rich.table import Table
from rich.text import Text

from engine.domain.errors import FieldError, InvalidInputError
from engine.domain.fleet import SimulatedFleet
from engine.domain.plan import GroupPlan, Plan, PlannedMemberState, StagePlan
from engine.domain.strategy import Gate, GateType, UpdateStrategy
from engine.domain.versions import Version
from engine.runtime.cli.common import (
    OutputFormat,
    global_options,
    print_json,
    run_command,
    stdout,
    with_client,
)
from engine.runtime.client import MeshfleetClient
from engine.runtime.fleet_file import load_fleet
from engine.runtime.preview import PlanPreview, preview, preview_network
from strategies import ReleaseCatalog, load_catalog, load_strategy
from strategies.continuity import copies_from_fleet

T = TypeVar("T")


class PlanOutput(str, enum.Enum):
    """How ``meshfleet plan`` prints the plan."""

    TABLE = "table"
    JSON = "json"
    MERMAID = "mermaid"


def _gate_text(gate: Gate) -> str:
    label = gate.display_name or gate.type.value
    if gate.type is GateType.SCHEDULED_START:
        day = gate.start_day.value if gate.start_day else "?"
        return f"{label} ({day} {gate.start_time} {gate.utc_offset or '+00:00'})"
    return f"{label} (approval)" if gate.display_name else label


def _gates_text(before: list[Gate], after: list[Gate]) -> str:
    parts = []
    if before:
        parts.append("before: " + ", ".join(_gate_text(g) for g in before))
    if after:
        parts.append("after: " + ", ".join(_gate_text(g) for g in after))
    return "; ".join(parts)


def _declared(declared: str | None) -> str:
    return "" if declared is None else f" (declared {declared})"


def _group_title(group: GroupPlan) -> Text:
    title = Text(group.name, style="bold")
    title.append(
        f"\nmax {group.max_concurrency} in flight{_declared(group.declared.max_concurrency)}"
        f"\nfailures allowed {group.max_allowed_failures}"
        f"{_declared(group.declared.max_allowed_failures)}",
        style="dim",
    )
    gates = _gates_text(group.before_gates, group.after_gates)
    if gates:
        title.append(f"\ngates {gates}", style="dim")
    return title


def _chain(values: list[str]) -> str:
    """'1.32.6 -> 1.33', collapsing repeats (Cilium often stays put across a hop)."""
    collapsed = [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]
    return " -> ".join(collapsed)


def _stage_table(stage: StagePlan) -> Table:
    after = ", ".join(stage.depends_on) if stage.depends_on else "nothing (starts first)"
    caption = [
        f"after: {after}",
        f"max {stage.max_concurrency} in flight{_declared(stage.declared.max_concurrency)}",
        f"failures allowed {stage.max_allowed_failures}"
        f"{_declared(stage.declared.max_allowed_failures)}",
        f"soak {stage.declared.after_stage_wait or '0s'}",
    ]
    gates = _gates_text(stage.before_gates, stage.after_gates)
    if gates:
        caption.append(f"gates {gates}")
    table = Table(
        title=Text(f"Stage {stage.name}", style="bold"),
        caption=" | ".join(caption),
        caption_justify="left",
        title_justify="left",
    )
    table.add_column("Group")
    table.add_column("Member", no_wrap=True)
    table.add_column("Kubernetes")
    table.add_column("Cilium")
    table.add_column("State")
    for group in stage.groups:
        title = _group_title(group)
        if not group.members:
            table.add_row(title, "-", "", "", "(no members)")
        for index, member in enumerate(group.members):
            skipped = member.state is PlannedMemberState.SKIPPED
            table.add_row(
                title if index == 0 else "",
                member.name,
                _chain(
                    [member.from_.kubernetes_version, *(h.kubernetes_version for h in member.hops)]
                ),
                _chain([member.from_.cilium_version, *(h.cilium_version for h in member.hops)]),
                Text(member.state.value, style="dim" if skipped else "green"),
                end_section=index == len(group.members) - 1,
            )
    return table


def render_table(result: Plan, undrainable: PlanPreview | None = None) -> None:
    """The plan as rich tables, one per stage, in execution order, then what to look at."""
    for stage in result.stages:
        stdout.print(_stage_table(stage))
        stdout.print()
    if result.warnings:
        stdout.print("[bold yellow]warnings:[/]")
        for warning in result.warnings:
            stdout.print(f"  - {warning}", markup=False, highlight=False)
    if undrainable is not None and undrainable.undrainable:
        verdict = (
            "allowed by the strategy (health.allowUndrainableMembers)"
            if undrainable.undrainable_allowed
            else "run start and simulate refuse this plan"
        )
        stdout.print(f"[bold yellow]never drainable[/] ({verdict}):")
        for member in undrainable.undrainable:
            stdout.print(f"  - {member}", markup=False, highlight=False)
    stdout.print(f"plan hash: {result.plan_hash}", highlight=False)


def print_preview(result: PlanPreview, chosen: PlanOutput) -> None:
    """Print a plan as ``meshfleet plan`` does, in the chosen form."""
    if chosen is PlanOutput.JSON:
        print_json(result.to_json_dict())
    elif chosen is PlanOutput.MERMAID:
        stdout.print(render_mermaid(result.plan), markup=False, highlight=False)
    else:
        render_table(result.plan, result)


def render_mermaid(result: Plan) -> str:
    """The stage DAG as a Mermaid flowchart (node ids are positions: names may hold '-')."""
    ids = {stage.name: f"s{index}" for index, stage in enumerate(result.stages)}
    lines = ["flowchart TD"]
    for stage in result.stages:
        count = len(stage.member_names())
        lines.append(
            f'    {ids[stage.name]}["{stage.name}<br/>{len(stage.groups)} group(s), '
            f'{count} member(s), concurrency {stage.max_concurrency}"]'
        )
    for stage in result.stages:
        for dependency in stage.depends_on:
            lines.append(f"    {ids[dependency]} --> {ids[stage.name]}")
    return "\n".join(lines)


def parse_target(text: str) -> Version:
    """``--target`` as a version, or a field error naming ``--target``."""
    try:
        return Version.parse(text)
    except ValueError as error:
        raise InvalidInputError([FieldError(path="--target", message=str(error))]) from None


def load_run_inputs(
    strategy_file: Path | None, target: str, catalog_file: Path | None
) -> tuple[UpdateStrategy | None, Version, ReleaseCatalog]:
    """The strategy (rules checked with the members), target and catalog; all problems at once."""
    errors: list[FieldError] = []

    def attempt(load: Callable[[], T]) -> T | None:
        try:
            return load()
        except InvalidInputError as error:
            prefix = f"{error.source}: " if error.source else ""
            errors.extend(
                FieldError(path=f"{prefix}{e.path}" if prefix else e.path, message=e.message)
                for e in error.errors
            )
            return None

    path = strategy_file
    strategy = None if path is None else attempt(lambda: load_strategy(path, check_rules=False))
    version = attempt(lambda: parse_target(target))
    catalog = attempt(lambda: load_catalog(catalog_file))
    if errors or (path is not None and strategy is None) or version is None or catalog is None:
        raise InvalidInputError(errors)
    return strategy, version, catalog


def _with_target_flag(error: InvalidInputError) -> InvalidInputError:
    """The planner's ``target`` field is the command's ``--target``."""
    return InvalidInputError(
        [
            e.model_copy(update={"path": "--target"}) if e.path == "target" else e
            for e in error.errors
        ],
        source=error.source,
    )


def _load_inputs(
    fleet: Path, strategy_file: Path, target: str, catalog_file: Path | None
) -> tuple[SimulatedFleet, UpdateStrategy, Version, ReleaseCatalog]:
    """Load every input, collecting the problems of all of them before failing."""
    errors: list[FieldError] = []

    def attempt(load: Callable[[], T]) -> T | None:
        try:
            return load()
        except InvalidInputError as error:
            prefix = f"{error.source}: " if error.source else ""
            errors.extend(
                FieldError(path=f"{prefix}{e.path}" if prefix else e.path, message=e.message)
                for e in error.errors
            )
            return None

    fleet_model = attempt(lambda: load_fleet(fleet))
    # Rules are checked by the planner with the members, so all problems come at once.
    strategy = attempt(lambda: load_strategy(strategy_file, check_rules=False))
    version = attempt(lambda: parse_target(target))
    catalog = attempt(lambda: load_catalog(catalog_file))
    if errors or fleet_model is None or strategy is None or version is None or catalog is None:
        raise InvalidInputError(errors)
    return fleet_model, strategy, version, catalog


def plan_command(
    ctx: typer.Context,
    fleet: Path | None = typer.Option(
        None, "--fleet", help="A simulated-fleet file: plan over its clusters."
    ),
    network: str | None = typer.Option(
        None,
        "--network",
        help="Plan over a live network's members and their real versions (needs a worker).",
    ),
    strategy: Path = typer.Option(
        ..., "--strategy", help="Strategy file: native YAML/JSON or Azure Fleet JSON."
    ),
    target: str = typer.Option(
        ..., "--target", help="Target Kubernetes version (1.33: the latest known patch)."
    ),
    output: PlanOutput | None = typer.Option(
        None, "--output", "-o", help="table, json or mermaid (default: the global --output)."
    ),
    allow_multi_minor: bool = typer.Option(
        False,
        "--allow-multi-minor",
        help="Allow jumps of two or more minors, as consecutive one-minor hops.",
    ),
    catalog: Path | None = typer.Option(
        None, "--catalog", help="A release catalog file overriding the bundled one."
    ),
    at: dt.datetime | None = typer.Option(
        None,
        "--at",
        help="Plan as of this moment (ISO 8601; default now, UTC). Windows decide member order.",
    ),
) -> None:
    """Show the plan an update run would execute: stages, groups, members, versions."""
    chosen = output or PlanOutput(global_options(ctx).output.value)
    errors_as = OutputFormat.JSON if chosen is PlanOutput.JSON else OutputFormat.TABLE
    now = at or dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)  # a moment written without an offset means UTC

    def over_fleet(fleet_file: Path) -> PlanPreview:
        fleet_model, strategy_model, version, release_catalog = _load_inputs(
            fleet_file, strategy, target, catalog
        )
        return preview(
            list(fleet_model.spec.clusters),
            copies_from_fleet(fleet_model.spec.global_services),
            strategy_model,
            version,
            release_catalog,
            now,
            allow_multi_minor=allow_multi_minor,
        )

    async def over_network(client: MeshfleetClient) -> PlanPreview:
        assert network is not None
        strategy_model, version, release_catalog = load_run_inputs(strategy, target, catalog)
        return await preview_network(
            client,
            network,
            strategy_model,
            version,
            release_catalog,
            allow_multi_minor=allow_multi_minor,
            now=now,
        )

    def body() -> None:
        if (fleet is None) == (network is None):
            raise InvalidInputError(
                [FieldError(path="--fleet", message="give exactly one of --fleet and --network")]
            )
        try:
            if fleet is not None:
                result = over_fleet(fleet)
            else:
                result = asyncio.run(with_client(ctx, over_network))
        except InvalidInputError as error:
            raise _with_target_flag(error) from None
        print_preview(result, chosen)

    run_command(ctx, body, errors_as)


def register(app: typer.Typer) -> None:
    """Add ``meshfleet plan`` to the main app."""
    app.command("plan")(plan_command)
