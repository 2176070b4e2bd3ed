"""``meshfleet schedule``: auto-upgrade profiles as Temporal Schedules.

``create`` makes one schedule per profile (``autoupgrade/<name>``, visible in
the Temporal Web UI and CLI); ``list``, ``show``, ``pause``, ``unpause``,
``trigger`` and ``delete`` act on it. Exit codes: 0 on success (``trigger``
included, whatever the trigger found); 2 for invalid input (one line per
problem); 1 for an unknown schedule or an unreachable server.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import typer
from rich.table import Table

from engine.domain.schedule import AutoUpgradeProfile, ProfileStatus
from engine.runtime.cli.common import (
    OutputFormat,
    print_json,
    resolve_output,
    run_async,
    run_command,
    stdout,
    with_client,
)
from engine.runtime.client import MeshfleetClient
from engine.runtime.schedules import ProfileOptions, profile_from_options

schedule_app = typer.Typer(
    name="schedule",
    help="Scheduled maintenance: auto-upgrade profiles on Temporal Schedules.",
    no_args_is_help=True,
)

_OUTPUT_HELP = "table or json (overrides the global --output)."


def _when(moment: dt.datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else "-"


def _print_status(status: ProfileStatus, output: OutputFormat) -> None:
    if output is OutputFormat.JSON:
        print_json(status.to_json_dict())
        return
    profile = status.profile
    window = profile.window
    target = f" {profile.target_kubernetes_version}" if profile.target_kubernetes_version else ""
    stdout.print(f"schedule {profile.name} ({status.schedule_id})", highlight=False)
    stdout.print(f"  network:   {profile.network}", highlight=False)
    stdout.print(f"  channel:   {profile.channel.value}{target}", highlight=False)
    stdout.print(
        f"  window:    {', '.join(d.value[:3] for d in window.days)} {window.start_time} "
        f"{window.time_zone} for {window.duration_hours}h"
        + (
            f", skipping {', '.join(d.isoformat() for d in window.skip_dates)}"
            if window.skip_dates
            else ""
        ),
        highlight=False,
    )
    stdout.print(f"  start run: {'yes' if profile.start_run else 'no (waits at gate start)'}")
    state = "paused" if status.paused else "active"
    note = f" ({status.note})" if status.note else ""
    stdout.print(f"  state:     {state}{note}", highlight=False)
    upcoming = ", ".join(_when(t) for t in status.next_action_times[:3]) or "-"
    stdout.print(f"  next:      {upcoming}", highlight=False)
    last = status.last_trigger_status.value if status.last_trigger_status else "never triggered"
    stdout.print(f"  last:      {last} at {_when(status.last_triggered_at)}", highlight=False)
    if status.last_trigger_upgrade_versions:
        stdout.print(f"  upgrades:  {', '.join(status.last_trigger_upgrade_versions)}")
    if status.last_run is not None:
        run = status.last_run
        stdout.print(f"  run:       {run.network}/{run.run}", highlight=False)
    if status.last_trigger_error:
        stdout.print(f"  error:     {status.last_trigger_error}", highlight=False, markup=False)


@schedule_app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The profile's name (the schedule is autoupgrade/NAME)."),
    network: str = typer.Option(..., help="The network to keep up to date."),
    strategy: Path = typer.Option(..., help="Strategy file (native YAML/JSON or Fleet JSON)."),
    channel: str = typer.Option(..., help="Stable, Rapid, Patch or TargetKubernetesVersion."),
    target: str | None = typer.Option(
        None, help="The minor for channel TargetKubernetesVersion, e.g. 1.34."
    ),
    days: str = typer.Option(..., help="Days of the week, e.g. Sat,Sun."),
    start: str = typer.Option(..., help="Start time HH:mm in --timezone."),
    timezone: str = typer.Option("UTC", help="IANA time zone, e.g. Europe/Berlin."),
    duration: str = typer.Option(..., help="How long the window stays open, 1h to 24h."),
    skip_date: list[str] = typer.Option([], help="A date (YYYY-MM-DD) with no window; repeat."),
    start_run: bool = typer.Option(
        True, "--start-run/--no-start-run", help="Start the generated run, or leave it waiting."
    ),
    disabled: bool = typer.Option(False, help="Create the schedule paused."),
    output: OutputFormat | None = typer.Option(None, help=_OUTPUT_HELP),
) -> None:
    """Create an auto-upgrade profile and its Temporal Schedule (every bad option reported)."""
    out = resolve_output(ctx, output)
    options = ProfileOptions(
        name=name,
        network=network,
        strategy=strategy,
        channel=channel,
        target=target,
        days=days,
        start=start,
        timezone=timezone,
        duration=duration,
        skip_dates=tuple(skip_date),
        start_run=start_run,
        disabled=disabled,
    )

    def profile() -> AutoUpgradeProfile:
        return profile_from_options(options)

    checked = run_command(ctx, profile, out)

    async def body(client: MeshfleetClient) -> None:
        _print_status(await client.create_schedule(checked), out)

    run_async(ctx, lambda: with_client(ctx, body), out)


@schedule_app.command("list")
def list_command(
    ctx: typer.Context,
    output: OutputFormat | None = typer.Option(None, help=_OUTPUT_HELP),
) -> None:
    """Every profile with its next action times and last trigger."""
    out = resolve_output(ctx, output)

    async def body(client: MeshfleetClient) -> None:
        found = await client.list_schedules()
        if out is OutputFormat.JSON:
            print_json([s.to_json_dict() for s in found])
            return
        if not found:
            stdout.print("no schedules")
            return
        table = Table("NAME", "NETWORK", "CHANNEL", "STATE", "NEXT", "LAST TRIGGER")
        for s in found:
            last = s.last_trigger_status.value if s.last_trigger_status else "-"
            table.add_row(
                s.profile.name,
                s.profile.network,
                s.profile.channel.value,
                "paused" if s.paused else "active",
                "\n".join(_when(t) for t in s.next_action_times[:2]) or "-",
                last,
            )
        stdout.print(table)

    run_async(ctx, lambda: with_client(ctx, body), out)


@schedule_app.command("show")
def show(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The profile's name."),
    output: OutputFormat | None = typer.Option(None, help=_OUTPUT_HELP),
) -> None:
    """The profile, its schedule's state and next action times, and its last trigger."""
    out = resolve_output(ctx, output)

    async def body(client: MeshfleetClient) -> None:
        _print_status(await client.show_schedule(name), out)

    run_async(ctx, lambda: with_client(ctx, body), out)


@schedule_app.command("pause")
def pause(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The profile's name."),
    note: str | None = typer.Option(None, help="Why (shown in the Web UI)."),
    output: OutputFormat | None = typer.Option(None, help=_OUTPUT_HELP),
) -> None:
    """Stop the schedule from firing until unpaused."""
    out = resolve_output(ctx, output)

    async def body(client: MeshfleetClient) -> None:
        _print_status(await client.pause_schedule(name, note), out)

    run_async(ctx, lambda: with_client(ctx, body), out)


@schedule_app.command("unpause")
def unpause(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The profile's name."),
    note: str | None = typer.Option(None, help="Why (shown in the Web UI)."),
    output: OutputFormat | None = typer.Option(None, help=_OUTPUT_HELP),
) -> None:
    """Let the schedule fire again at its next opening."""
    out = resolve_output(ctx, output)

    async def body(client: MeshfleetClient) -> None:
        _print_status(await client.unpause_schedule(name, note), out)

    run_async(ctx, lambda: with_client(ctx, body), out)


@schedule_app.command("trigger")
def trigger(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The profile's name."),
    output: OutputFormat | None = typer.Option(None, help=_OUTPUT_HELP),
) -> None:
    """Fire the schedule now (even when paused) and show what the trigger did."""
    out = resolve_output(ctx, output)

    async def body(client: MeshfleetClient) -> None:
        _print_status(await client.trigger_schedule(name), out)

    run_async(ctx, lambda: with_client(ctx, body), out)


@schedule_app.command("delete")
def delete(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The profile's name."),
    output: OutputFormat | None = typer.Option(None, help=_OUTPUT_HELP),
) -> None:
    """Delete the schedule (runs it created go on)."""
    out = resolve_output(ctx, output)

    async def body(client: MeshfleetClient) -> None:
        await client.delete_schedule(name)
        if out is OutputFormat.JSON:
            print_json({"deleted": name})
        else:
            stdout.print(f"deleted schedule {name}")

    run_async(ctx, lambda: with_client(ctx, body), out)


def register(app: typer.Typer) -> None:
    """Add ``meshfleet schedule ...`` to the main app."""
    app.add_typer(schedule_app)
