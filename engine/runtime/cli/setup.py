"""``meshfleet setup``: prepare an existing Temporal namespace for meshfleet's workers.

Run it once per namespace, before the first worker starts (the compose file
and the Kubernetes manifests run it as a one-shot job); running it again
changes nothing. Exit codes: 0 when the namespace is ready; 1 when the server
is unreachable, too old, lacks a capability, the namespace does not exist, an
attribute has another type, or (``--check``) an attribute is missing.
"""

from __future__ import annotations

import typer
from rich.table import Table

from engine.runtime.cli.common import (
    OutputFormat,
    global_options,
    print_json,
    resolve_output,
    run_async,
    stdout,
)
from engine.runtime.connection import ConnectionSettings, connect
from engine.runtime.setup import SetupReport, prepare_namespace

_OUTPUT_HELP = "table or json (overrides the global --output)."


def _print_report(report: SetupReport) -> None:
    stdout.print(
        f"Temporal Server {report.server_version} at {report.address}, "
        f"namespace {report.namespace!r}",
        highlight=False,
    )
    table = Table("search attribute", "type", "state")
    for name in report.added:
        table.add_row(name, "Keyword", "[green]added[/]")
    for name in report.kept:
        table.add_row(name, "Keyword", "kept")
    for name in report.missing:
        table.add_row(name, "Keyword", "[red]missing[/]")
    stdout.print(table)
    features = ", ".join(name for name, present in report.capabilities.items() if present)
    stdout.print(f"capabilities: {features}", highlight=False)
    for warning in report.warnings:
        stdout.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if report.ready:
        stdout.print(f"namespace {report.namespace!r} is ready for meshfleet", highlight=False)
    else:
        stdout.print(
            f"[red]namespace {report.namespace!r} is not ready:[/] run meshfleet setup "
            "without --check to add the missing search attributes",
            highlight=False,
        )


def setup(
    ctx: typer.Context,
    check: bool = typer.Option(
        False, "--check", help="Change nothing; exit 1 if a search attribute is missing."
    ),
    output: OutputFormat | None = typer.Option(None, "--output", help=_OUTPUT_HELP),
) -> None:
    """Prepare a Temporal namespace: check the server, register meshfleet's search attributes."""
    fmt = resolve_output(ctx, output)

    async def body() -> SetupReport:
        options = global_options(ctx)
        settings = ConnectionSettings.resolve(options.address, options.namespace)
        # Never start a server here: setup is for a server that already runs.
        connection = await connect(settings, start_embedded=False)
        try:
            return await prepare_namespace(connection.client, check_only=check)
        finally:
            connection.close()

    report = run_async(ctx, body, fmt)
    if fmt is OutputFormat.JSON:
        print_json(report.to_json_dict())
    else:
        _print_report(report)
    if not report.ready:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``meshfleet setup`` to the main app."""
    app.command()(setup)
