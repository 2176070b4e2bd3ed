"""The ``meshfleet`` command line: a thin layer over the client and the runtime.

Each command group lives in its own module and is registered below; commands
parse and validate arguments, call the client or the runtime, and print.
"""

from __future__ import annotations

import typer

from engine.runtime.cli import network as network_commands
from engine.runtime.cli import plan as plan_commands
from engine.runtime.cli import run as run_commands
from engine.runtime.cli import schedule as schedule_commands
from engine.runtime.cli import server as server_commands
from engine.runtime.cli import setup as setup_commands
from engine.runtime.cli import sim as sim_commands
from engine.runtime.cli import simulate as simulate_commands
from engine.runtime.cli.common import GlobalOptions, LogFormat, OutputFormat
from engine.runtime.process import exit_code, exit_now

app = typer.Typer(
    name="meshfleet",
    help="Keep fleets of Kubernetes clusters joined by a Cilium ClusterMesh alive and up to date.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _global(
    ctx: typer.Context,
    address: str | None = typer.Option(
        None,
        "--address",
        help="Temporal frontend host:port (default: $TEMPORAL_ADDRESS, else the embedded server).",
    ),
    namespace: str | None = typer.Option(
        None, "--namespace", help="Temporal namespace (default: $TEMPORAL_NAMESPACE or 'default')."
    ),
    output: OutputFormat = typer.Option(OutputFormat.TABLE, "--output", help="table or json."),
    log_format: LogFormat = typer.Option(
        LogFormat.AUTO, "--log-format", help="console, json, or auto (console on a terminal)."
    ),
) -> None:
    from engine.runtime.telemetry import configure_logging

    ctx.obj = GlobalOptions(
        address=address, namespace=namespace, output=output, log_format=log_format
    )
    configure_logging(log_format.value)


server_commands.register(app)
sim_commands.register(app)
plan_commands.register(app)
network_commands.register(app)
setup_commands.register(app)
run_commands.register(app)
schedule_commands.register(app)
simulate_commands.register(app)


def main() -> None:
    """Console-script entry point: every command leaves through ``exit_now``."""
    try:
        app()
    except SystemExit as done:
        exit_now(exit_code(done))
    exit_now(0)
