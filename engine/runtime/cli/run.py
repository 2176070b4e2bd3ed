"""``meshfleet run``: start, watch and steer update runs.

A run is named ``NETWORK/RUN`` (or just ``RUN`` when the name is unique, or
with ``--network``). Controls are validated by the run itself: a rejected
control prints the reason, exits 2 and leaves nothing in the run's history.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from engine.domain.errors import FieldError, InvalidInputError
from engine.domain.run import (
    ControlAction,
    ControlRecord,
    GateKind,
    GateState,
    GateStatus,
    RunStatus,
    SkipTargetType,
    State,
    left_drained_line,
)
from engine.domain.runspec import RunSpec, UpgradeType
from engine.runtime.cli.common import (
    OutputFormat,
    command_prefix,
    print_json,
    report_invalid,
    resolve_output,
    run_async,
    stdout,
    with_client,
)
from engine.runtime.cli.plan import PlanOutput, load_run_inputs, print_preview
from engine.runtime.client import MeshfleetClient
from engine.runtime.preview import preview_network
from engine.runtime.runs import UpdateRunHandle

run_app = typer.Typer(
    name="run", help="Staged update runs: start, watch, steer.", no_args_is_help=True
)

_OUTPUT_HELP = "table or json (overrides the global --output)."

STATE_STYLE = {
    State.NOT_STARTED: "dim",
    State.RUNNING: "cyan",
    State.PENDING: "yellow",
    State.STOPPING: "yellow",
    State.STOPPED: "magenta",
    State.SKIPPED: "dim",
    State.FAILED: "bold red",
    State.COMPLETED: "green",
}


#: How a member's message begins when its restore failed and it is still drained
#: (``workflows/member_update.py`` words it; ``tests/runs/test_drain_restore.py`` pins it).
LEFT_DRAINED = "LEFT DRAINED:"


def styled(state: State) -> Text:
    return Text(state.value, style=STATE_STYLE[state])


def render_status(status: RunStatus) -> RenderableType:
    """The run as a person reads it: one header, then stages, groups, members and gates."""
    target = status.target.kubernetes_version if status.target else "?"
    cilium = status.target.cilium_version if status.target else "?"
    header = Text.assemble(
        (f"{status.network}/{status.name}", "bold"),
        f"  Kubernetes {target} (Cilium {cilium})  ",
        styled(status.state),
        f"  {member_counts(status)}",
    )
    table = Table(show_header=True, header_style="bold", expand=False, box=None, pad_edge=False)
    table.add_column("stage / group / member")
    table.add_column("state")
    table.add_column("from → to")
    table.add_column("detail", overflow="fold")
    for stage in status.stages:
        wait = stage.after_stage_wait
        detail = stage.message or ""
        if wait is not None and wait.state is State.RUNNING and wait.until:
            detail = f"soak until {wait.until:%H:%M:%S}, {wait.checks} checks ok"
        elif wait is not None and wait.state is State.SKIPPED:
            skipped = "soak skipped" + (f": {wait.message}" if wait.message else "")
            detail = f"{detail}; {skipped}" if detail else skipped
        table.add_row(
            Text(stage.name, style="bold"),
            styled(stage.state),
            _limits(stage.max_concurrency, stage.failure_count, stage.max_allowed_failures),
            detail,
        )
        for gate in stage.before_gates + stage.after_gates:
            table.add_row(
                f"  gate {gate.id}", gate.state.value, gate.kind.value, _gate_detail(gate)
            )
        for group in stage.groups:
            table.add_row(
                f"  {group.name}",
                styled(group.state),
                _limits(group.max_concurrency, group.failure_count, group.max_allowed_failures),
                group.message or "",
            )
            for gate in group.before_gates + group.after_gates:
                table.add_row(
                    f"    gate {gate.id}", gate.state.value, gate.kind.value, _gate_detail(gate)
                )
            for member in group.members:
                step = (
                    f"[{member.step.value}] "
                    if member.step and member.state is State.RUNNING
                    else ""
                )
                table.add_row(
                    f"    {member.name}",
                    styled(member.state),
                    f"{member.from_.kubernetes_version} → {member.to.kubernetes_version}",
                    step + (member.message or ""),
                )
    parts: list[RenderableType] = [header, table]
    if status.joined_since_plan:
        joined = ", ".join(status.joined_since_plan)
        parts.append(Text(f"joined since the plan (not in this run): {joined}"))
    left_drained = [m for _, _, m in status.members() if (m.message or "").startswith(LEFT_DRAINED)]
    if left_drained:
        parts.append(Text("members left drained (restore them by hand):", style="bold red"))
        for member in left_drained:
            parts.append(Text(f"  {member.name}: {member.message}", style="red"))
    controls = [c for c in status.controls if c.identity != "meshfleet"]
    if controls:
        parts.append(Text("controls:", style="bold"))
        for control in controls:
            parts.append(Text(f"  {control.at:%H:%M:%S} {control_text(status, control)}"))
    loud = left_drained_line(status.left_drained)
    if loud is not None and not (status.error or "").startswith(loud):
        parts.append(Text(loud, style="bold red"))
    if status.error:
        parts.append(Text(f"error: {status.error}", style="red"))
    return Group(*parts)


def member_counts(status: RunStatus) -> str:
    """'2 completed, 2 skipped, 1 failed of 5 members': upgraded and skipped counted apart."""
    members = [m for _, _, m in status.members()]
    counts = [
        (state, sum(1 for m in members if m.state is state))
        for state in (State.COMPLETED, State.SKIPPED, State.FAILED, State.RUNNING, State.PENDING)
    ]
    shown = [f"{n} {state.value.lower()}" for state, n in counts if n or state is State.COMPLETED]
    return f"{', '.join(shown)} of {len(members)} members"


def control_text(status: RunStatus, control: ControlRecord) -> str:
    """'approve gate canary/after/0 by ana@laptop: looks healthy' (the reason or comment)."""
    what = control.action.value + (f" {control.details}" if control.details else "")
    why = control.reason
    if why is None and control.action is ControlAction.APPROVE and control.details:
        gate_id = control.details.removeprefix("gate ")
        why = next((g.comment for g in status.gates() if g.id == gate_id), None)
    return f"{what} by {control.identity}" + (f": {why}" if why else "")


def _gate_detail(gate: GateStatus) -> str:
    """A gate's message, and who approved it with what comment."""
    parts = [gate.message] if gate.message else []
    if gate.completed_by:
        parts.append(f"by {gate.completed_by}" + (f": {gate.comment}" if gate.comment else ""))
    return "; ".join(parts)


def _limits(limit: int, failures: int, budget: int) -> str:
    return f"up to {limit} member(s) at once, failures {failures}/{budget} allowed"


def _print_status(status: RunStatus, output: OutputFormat) -> None:
    if output is OutputFormat.JSON:
        print_json(status.to_json_dict())
    else:
        stdout.print(render_status(status))


#: A condition on the run that ends a watch early (``run watch --until``).
Until = Callable[[RunStatus], bool]


def _never(_status: RunStatus) -> bool:
    return False


def parse_until(text: str | None) -> Until | None:
    """``--until approval`` (a gate waits for approval) or ``--until STATE`` (the run's state)."""
    if text is None:
        return None
    if text.lower() == "approval":
        return lambda status: any(
            g.kind is GateKind.APPROVAL and g.state is GateState.PENDING for g in status.gates()
        )
    for state in State:
        if state.value.lower() == text.lower():
            return lambda status: status.state is state
    choices = ", ".join(["approval", *(s.value for s in State)])
    problem = FieldError(path="--until", message=f"{text!r} is not one of: {choices}")
    raise InvalidInputError([problem])


async def watch_live(handle: UpdateRunHandle, until: Until = _never) -> RunStatus:
    """A live view until the run finishes (or ``until`` holds); the last status."""
    final: RunStatus | None = None
    with Live(console=stdout, refresh_per_second=4, transient=False) as live:
        async for status in handle.watch():
            live.update(render_status(status))
            final = status
            if until(status):
                break
    assert final is not None
    return final


async def print_progress_lines(handle: UpdateRunHandle, until: Until = _never) -> RunStatus:
    """Without a terminal: one plain line per change of the run, a stage, a gate or a member."""
    seen: dict[str, str] = {}
    final: RunStatus | None = None

    def line(key: str, text: str, state: str) -> None:
        before = seen.get(key)
        seen[key] = state
        if before != state and not (before is None and state == State.NOT_STARTED.value):
            stdout.print(text, highlight=False, markup=False, soft_wrap=True)

    async for status in handle.watch():
        final = status
        stamp = dt.datetime.now().strftime("%H:%M:%S")
        line("run", f"{stamp} run {handle.ref}: {status.state.value}", status.state.value)
        for stage in status.stages:
            stage_text = f"{stamp} stage {stage.name}: {stage.state.value}"
            if stage.message:
                stage_text += f" ({stage.message})"
            line(f"s/{stage.name}", stage_text, f"{stage.state.value}{stage.message or ''}")
            wait = stage.after_stage_wait
            if wait is not None:
                soak = f"{stamp} soak after {stage.name} ({wait.seconds}s): {wait.state.value}"
                line(f"w/{stage.name}", soak, wait.state.value)
            gates = list(stage.before_gates + stage.after_gates)
            gates += [g for group in stage.groups for g in group.before_gates + group.after_gates]
            for gate in gates:
                line(f"g/{gate.id}", f"{stamp} gate {gate.id}: {gate.state.value}", gate.state)
            for group in stage.groups:
                for member in group.members:
                    detail = f" ({member.message})" if member.message else ""
                    line(
                        f"m/{member.name}",
                        f"{stamp}   {member.name}: {member.state.value}{detail}",
                        f"{member.state.value}{detail}",
                    )
        for index, control in enumerate(status.controls):
            line(f"c/{index}", f"{stamp} control {control_text(status, control)}", "seen")
        if until(status):
            break
    assert final is not None
    stdout.print(
        f"run {handle.ref}: {final.state.value}, {member_counts(final)}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    return final


async def follow(handle: UpdateRunHandle, until: Until = _never) -> RunStatus:
    """A live view in a terminal; one line per change otherwise (logs, pipes, CI)."""
    if stdout.is_terminal:
        return await watch_live(handle, until)
    return await print_progress_lines(handle, until)


def _exit_for(status: RunStatus) -> None:
    """0 when Completed, 1 when Failed or Stopped."""
    if status.state in (State.FAILED, State.STOPPED):
        raise typer.Exit(1)


@run_app.command("start")
def start(
    ctx: typer.Context,
    network: str = typer.Option(..., help="The network to update."),
    strategy: Path | None = typer.Option(
        None, help="Strategy file (native YAML/JSON or Azure Fleet JSON); none = one by one."
    ),
    target: str | None = typer.Option(
        None, help="Target Kubernetes version, e.g. 1.33 (the latest known patch) or 1.33.4."
    ),
    upgrade_type: UpgradeType = typer.Option(UpgradeType.FULL, help="Full or ControlPlaneOnly."),
    name: str | None = typer.Option(None, help="Run name (default: run-<date>-<time>-<random>)."),
    allow_multi_minor: bool = typer.Option(
        False, help="Allow a jump of several minors as consecutive one-minor hops."
    ),
    catalog: Path | None = typer.Option(None, help="Release catalog overriding the bundled one."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the plan the run would execute and start nothing."
    ),
    wait: bool = typer.Option(False, help="Watch the run live until it finishes."),
    output: OutputFormat | None = typer.Option(None, help=_OUTPUT_HELP),
) -> None:
    """Start an update run of NETWORK to --target under --strategy.

    The plan is computed first, from the network's live members, exactly as
    ``meshfleet plan --network`` shows it: a plan the rules refuse is refused
    here with every problem listed (exit 2), and nothing is started.
    """
    out = resolve_output(ctx, output)

    async def body(client: MeshfleetClient) -> None:
        if upgrade_type is UpgradeType.NODE_IMAGE_ONLY:
            raise InvalidInputError(
                [
                    FieldError(
                        path="--upgrade-type",
                        message="NodeImageOnly is not supported by meshfleet's backends yet",
                    )
                ]
            )
        strategy_model, version, release_catalog = load_run_inputs(strategy, target or "", catalog)
        spec = RunSpec(
            name=name,
            network=network,
            kubernetes_version=target,
            upgrade_type=upgrade_type,
            strategy=strategy_model,
            allow_multi_minor=allow_multi_minor,
        )
        try:
            planned = await preview_network(
                client,
                network,
                strategy_model,
                version,
                release_catalog,
                allow_multi_minor=allow_multi_minor,
            )
        except InvalidInputError as error:
            raise InvalidInputError(
                [
                    e.model_copy(update={"path": "--target"}) if e.path == "target" else e
                    for e in error.errors
                ],
                source=error.source,
            ) from None
        if dry_run:
            print_preview(planned, PlanOutput(out.value))
            return
        refusals = planned.refusals()
        if refusals:
            raise InvalidInputError(refusals)
        handle = await client.start_update_run(spec, catalog_file=catalog)
        if not wait:
            if out is OutputFormat.JSON:
                print_json(
                    {
                        "runId": handle.name,
                        "network": handle.network,
                        "ref": handle.ref,
                        "workflowId": handle.workflow_id,
                    }
                )
            else:
                stdout.print(f"started update run {handle.ref}")
                stdout.print(f"  watch it:  {command_prefix(ctx)} run watch {handle.ref}")
            return
        final = await (handle.result() if out is OutputFormat.JSON else follow(handle))
        if out is OutputFormat.JSON:
            print_json(final.to_json_dict())
        _exit_for(final)

    if target is None and upgrade_type is not UpgradeType.NODE_IMAGE_ONLY:
        problem = FieldError(path="--target", message="a target version is required")
        report_invalid([problem], out, None)
    run_async(ctx, lambda: with_client(ctx, body), out)


@run_app.command("status")
def status_command(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="NETWORK/RUN, or RUN."),
    network: str | None = typer.Option(
        None, help="The run's network, when RUN alone is ambiguous."
    ),
    output: OutputFormat | None = typer.Option(None, help=_OUTPUT_HELP),
) -> None:
    """Show a run's stages, groups, members and gates."""
    out = resolve_output(ctx, output)

    async def body(client: MeshfleetClient) -> None:
        handle = await client.get_update_run(run, network)
        _print_status(await handle.status(), out)

    run_async(ctx, lambda: with_client(ctx, body), out)


@run_app.command("watch")
def watch(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="NETWORK/RUN, or RUN."),
    network: str | None = typer.Option(None, help="The run's network."),
    until: str | None = typer.Option(
        None,
        help="Stop watching (exit 0) once a gate waits for approval ('approval') "
        "or the run is in this state (e.g. Stopped).",
    ),
    output: OutputFormat | None = typer.Option(None, help=_OUTPUT_HELP),
) -> None:
    """Follow a run until it finishes: live in a terminal, else one line per change.

    Exit 0 when it Completed (or ``--until`` held), 1 when it Failed or Stopped.
    JSON: one status per line on each change.
    """
    out = resolve_output(ctx, output)

    async def body(client: MeshfleetClient) -> None:
        condition = parse_until(until) or _never
        handle = await client.get_update_run(run, network)
        if out is OutputFormat.JSON:
            final: RunStatus | None = None
            async for status in handle.watch():
                print(status.model_dump_json(by_alias=True, exclude_none=True), flush=True)
                final = status
                if condition(status):
                    break
            assert final is not None
        else:
            final = await follow(handle, condition)
        if condition(final):
            return
        _exit_for(final)

    run_async(ctx, lambda: with_client(ctx, body), out)


def _control_command(
    ctx: typer.Context,
    run: str,
    network: str | None,
    output: OutputFormat | None,
    act: Callable[[UpdateRunHandle], Awaitable[RunStatus]],
) -> None:
    out = resolve_output(ctx, output)

    async def body(client: MeshfleetClient) -> None:
        handle = await client.get_update_run(run, network)
        status = await act(handle)
        if out is OutputFormat.JSON:
            print_json(status.to_json_dict())
        else:
            record = status.controls[-1]
            what = record.action.value + (f" ({record.details})" if record.details else "")
            stdout.print(f"{handle.ref}: {what} accepted; the run is {status.state.value}")

    run_async(ctx, lambda: with_client(ctx, body), out)


@run_app.command("approve")
def approve(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="NETWORK/RUN, or RUN."),
    gate: str = typer.Argument(..., help="Gate id (see 'run status') or its unique display name."),
    comment: str | None = typer.Option(None, help="Recorded with the approval."),
    network: str | None = typer.Option(None, help="The run's network."),
    output: OutputFormat | None = typer.Option(None, help=_OUTPUT_HELP),
) -> None:
    """Approve a waiting gate (Approval, or a ScheduledStart early)."""
    _control_command(ctx, run, network, output, lambda h: h.approve(gate, comment))


@run_app.command("stop")
def stop(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="NETWORK/RUN, or RUN."),
    reason: str = typer.Option(..., help="Why (recorded)."),
    network: str | None = typer.Option(None, help="The run's network."),
    output: OutputFormat | None = typer.Option(None, help=_OUTPUT_HELP),
) -> None:
    """Start nothing new; members in flight finish; the run ends Stopped."""
    _control_command(ctx, run, network, output, lambda h: h.stop(reason))


@run_app.command("resume")
def resume(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="NETWORK/RUN, or RUN."),
    reason: str | None = typer.Option(None, help="Why (recorded)."),
    network: str | None = typer.Option(None, help="The run's network."),
    output: OutputFormat | None = typer.Option(None, help=_OUTPUT_HELP),
) -> None:
    """Continue a Stopped or Failed run where it left off."""
    _control_command(ctx, run, network, output, lambda h: h.resume(reason))


@run_app.command("skip")
def skip(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="NETWORK/RUN, or RUN."),
    member: list[str] = typer.Option([], "--member", help="Member to skip (repeatable)."),
    group: list[str] = typer.Option([], "--group", help="Group to skip (repeatable)."),
    stage: list[str] = typer.Option([], "--stage", help="Stage to skip (repeatable)."),
    after_stage_wait: list[str] = typer.Option(
        [], "--after-stage-wait", help="Stage whose soak to skip (repeatable)."
    ),
    reason: str | None = typer.Option(None, help="Why (recorded)."),
    network: str | None = typer.Option(None, help="The run's network."),
    output: OutputFormat | None = typer.Option(None, help=_OUTPUT_HELP),
) -> None:
    """Skip members, groups, stages or after-stage waits."""
    targets = (
        [(SkipTargetType.MEMBER, n) for n in member]
        + [(SkipTargetType.GROUP, n) for n in group]
        + [(SkipTargetType.STAGE, n) for n in stage]
        + [(SkipTargetType.AFTER_STAGE_WAIT, n) for n in after_stage_wait]
    )
    if not targets:
        problem = "name at least one --member, --group, --stage or --after-stage-wait"
        out = resolve_output(ctx, output)
        report_invalid([FieldError(path="targets", message=problem)], out, None)
    _control_command(ctx, run, network, output, lambda h: h.skip(targets, reason))


@run_app.command("retry")
def retry(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="NETWORK/RUN, or RUN."),
    member: list[str] = typer.Option([], "--member", help="Failed member to retry (default: all)."),
    reason: str | None = typer.Option(None, help="Why (recorded)."),
    network: str | None = typer.Option(None, help="The run's network."),
    output: OutputFormat | None = typer.Option(None, help=_OUTPUT_HELP),
) -> None:
    """Upgrade failed members again, with the same settings."""
    _control_command(ctx, run, network, output, lambda h: h.retry(member, reason))


@run_app.command("list")
def list_command(
    ctx: typer.Context,
    network: str | None = typer.Option(None, help="Only runs of this network."),
    state: State | None = typer.Option(None, help="Only runs in this state."),
    output: OutputFormat | None = typer.Option(None, help=_OUTPUT_HELP),
) -> None:
    """List runs (newest first) through the Web UI's search attributes."""
    out = resolve_output(ctx, output)

    async def body(client: MeshfleetClient) -> None:
        found = await client.list_runs(network, state)
        if out is OutputFormat.JSON:
            print_json(
                [
                    {
                        "runId": r.name,
                        "network": r.network,
                        "ref": r.ref,
                        "state": r.state,
                        "stage": r.stage,
                        "target": r.target,
                        "started": r.started.isoformat() if r.started else None,
                    }
                    for r in found
                ]
            )
            return
        table = Table("run", "state", "stage", "target", "started", box=None)
        for r in found:
            table.add_row(
                r.ref,
                r.state or "",
                r.stage or "",
                r.target or "",
                f"{r.started:%Y-%m-%d %H:%M}" if r.started else "",
            )
        stdout.print(table if found else "no update runs")

    run_async(ctx, lambda: with_client(ctx, body), out)


@run_app.command("report")
def report_command(
    ctx: typer.Context,
    run: str = typer.Argument(..., help="NETWORK/RUN, or RUN."),
    network: str | None = typer.Option(None, help="The run's network."),
    html: Path = typer.Option(
        ..., "--html", help="Write the run as a picture here: one self-contained HTML file."
    ),
) -> None:
    """Write a run's timeline (steps, gates, soaks, services) as one HTML file.

    Read from the run's status and its member workflows' histories; works while
    the run goes (what happened so far) and after it ended.
    """
    # Imported here: the one command that draws stays self-contained in this module.
    import asyncio

    from engine.runtime.timeline import html_file_problem, run_timeline, write_html

    out = resolve_output(ctx, None)
    problem = html_file_problem(html)
    if problem is not None:
        report_invalid([problem], out, None)
    html = html.absolute()

    async def body(client: MeshfleetClient) -> None:
        handle = await client.get_update_run(run, network)
        timeline = await run_timeline(client.temporal, await handle.status())
        await asyncio.to_thread(write_html, html, timeline)
        stdout.print(f"timeline: {html}", highlight=False, markup=False)

    run_async(ctx, lambda: with_client(ctx, body), out)


def register(app: typer.Typer) -> None:
    """Add ``meshfleet run ...`` to the main app."""
    app.add_typer(run_app)


__all__ = [
    "follow",
    "member_counts",
    "print_progress_lines",
    "register",
    "render_status",
    "watch_live",
]
