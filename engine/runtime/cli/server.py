"""``meshfleet server``, ``worker``, ``version`` and ``healthcheck``: the runtime's own commands."""

from __future__ import annotations

import uuid
from datetime import timedelta
from importlib.metadata import version as package_version
from pathlib import Path

import typer
from temporalio.client import WorkflowFailureError

from engine.domain.errors import UnavailableError
from engine.domain.failures import failure_text
from engine.domain.health import HEALTH_CHECK_WORKFLOW, HealthCheckInput, HealthReport
from engine.runtime import devserver
from engine.runtime.backends import BackendKind
from engine.runtime.cli.common import (
    OutputFormat,
    global_options,
    print_json,
    run_async,
    stdout,
)
from engine.runtime.connection import ConnectionSettings, connect
from engine.runtime.settings import state_dir as default_state_dir
from engine.runtime.settings import task_queue as default_task_queue

#: How long a live worker may take to answer the health check.
HEALTH_CHECK_TIMEOUT = timedelta(seconds=30)


def settings_from(ctx: typer.Context) -> ConnectionSettings:
    """Connection settings from the global flags and Temporal's environment."""
    options = global_options(ctx)
    return ConnectionSettings.resolve(options.address, options.namespace)


def server(
    ctx: typer.Context,
    port: int = typer.Option(devserver.DEFAULT_GRPC_PORT, help="gRPC port of the frontend."),
    ui_port: int = typer.Option(devserver.DEFAULT_UI_PORT, help="Port of the Web UI."),
    http_port: int | None = typer.Option(None, help="HTTP API port (default: a free one)."),
    metrics_port: int | None = typer.Option(None, help="Metrics port (default: a free one)."),
    state_dir: Path | None = typer.Option(
        None,
        help="Where the server's database lives (default: $MESHFLEET_STATE_DIR or ./.meshfleet).",
    ),
    headless: bool = typer.Option(False, help="Run without the Web UI."),
) -> None:
    """Run the embedded Temporal server (with its Web UI) in the foreground until Ctrl-C."""

    async def body() -> None:
        devserver.install_signal_handlers()
        embedded = await devserver.start_embedded_server(
            state_dir or default_state_dir(),
            grpc_port=port,
            ui_port=ui_port,
            http_port=http_port,
            metrics_port=metrics_port,
            ui=not headless,
        )
        try:
            info = {
                "address": embedded.address,
                "ui": embedded.ui_url,
                "database": str(embedded.config.db_path),
                "reused": not embedded.owned,
            }
            if global_options(ctx).output is OutputFormat.JSON:
                print_json(info)
            else:
                verb = "Reusing the running" if not embedded.owned else "Started the embedded"
                stdout.print(f"{verb} Temporal server.")
                stdout.print(f"  gRPC address: {embedded.address}")
                if embedded.ui_url:
                    stdout.print(f"  Web UI:       {embedded.ui_url}")
                stdout.print(f"  database:     {embedded.config.db_path}")
            if not embedded.owned:
                return
            stdout.print("Press Ctrl-C to stop.")
            code = await embedded.wait()
            stdout.print(f"the Temporal server exited with code {code}")
        finally:
            embedded.stop()

    run_async(ctx, body)


def worker(
    ctx: typer.Context,
    task_queue: str | None = typer.Option(
        None, help="Task queue (default: $MESHFLEET_TASK_QUEUE or 'meshfleet')."
    ),
    backend: BackendKind = typer.Option(
        BackendKind.SIMULATED, help="Fleet backend: simulated (default) or kubernetes."
    ),
    access: Path | None = typer.Option(
        None, help="Access file of the kubernetes backend (contexts, Cluster API references)."
    ),
    state_dir: Path | None = typer.Option(
        None, help="State directory of the simulated fleet (default: $MESHFLEET_STATE_DIR)."
    ),
    health_port: int | None = typer.Option(
        None, help="Serve GET /healthz on 0.0.0.0:PORT (200 while the worker polls)."
    ),
    metrics_port: int | None = typer.Option(
        None,
        help="Serve Prometheus metrics (the SDK's and meshfleet's) on 0.0.0.0:PORT/metrics "
        "(default: $MESHFLEET_METRICS_PORT; none when unset).",
    ),
) -> None:
    """Run a meshfleet worker until SIGINT/SIGTERM (start more of them to scale out)."""
    import contextlib
    import os

    from temporalio.runtime import Runtime

    from engine.runtime.backends import open_backend
    from engine.runtime.metrics import (
        metrics_for,
        metrics_port_from,
        metrics_runtime,
        network_status_collector,
    )
    from engine.runtime.telemetry import configure_tracing
    from engine.runtime.worker import build_worker, run_worker_until_signalled, serve_health

    async def body() -> None:
        configure_tracing()
        port = metrics_port_from(metrics_port, os.environ)
        runtime = metrics_runtime(port) if port is not None else None
        if runtime is not None:
            # Every client of this process (so the worker's) reports through it.
            Runtime.set_default(runtime, error_if_already_set=False)
        fleet = open_backend(backend, state_dir=state_dir, access_file=access)
        connection = await connect(settings_from(ctx))
        try:
            queue = task_queue or default_task_queue()
            stdout.print(
                f"meshfleet worker ({backend.value} backend) polling task queue {queue!r} "
                f"on {connection.address}"
                + (f"; metrics on :{port}/metrics" if port is not None else "")
            )
            health = await serve_health(health_port) if health_port else None
            try:
                async with contextlib.AsyncExitStack() as stack:
                    if runtime is not None:
                        await stack.enter_async_context(
                            network_status_collector(connection.client, metrics_for(runtime))
                        )
                    await run_worker_until_signalled(
                        build_worker(connection.client, queue, backend=fleet)
                    )
            finally:
                if health is not None:
                    health.close()
        finally:
            connection.close()

    run_async(ctx, body)


def version() -> None:
    """Print meshfleet's version and the Temporal SDK's."""
    stdout.print(
        f"meshfleet {package_version('meshfleet')} (temporalio {package_version('temporalio')})"
    )


async def run_health_check(
    ctx: typer.Context, message: str, task_queue: str
) -> tuple[HealthReport, int, str | None]:
    """Run the health check on ``task_queue``, the queue the real workers poll.

    Answers with the report, how many workers Temporal saw polling the queue,
    and the Web UI's address. Raises UnavailableError when no worker polls it
    (meshfleet starts none of its own here: the check is about yours).
    """
    from engine.runtime.preview import no_worker_message, pollers

    connection = await connect(settings_from(ctx))
    try:
        seen = await pollers(connection.client, task_queue)
        if seen == 0:
            raise UnavailableError(no_worker_message(task_queue))
        try:
            report: HealthReport = await connection.client.execute_workflow(
                HEALTH_CHECK_WORKFLOW,
                HealthCheckInput(message=message),
                id=f"healthcheck/{uuid.uuid4().hex[:12]}",
                task_queue=task_queue,
                result_type=HealthReport,
                execution_timeout=HEALTH_CHECK_TIMEOUT,
            )
        except WorkflowFailureError as error:
            raise UnavailableError(
                f"the {seen} worker(s) polling task queue {task_queue!r} did not answer the "
                f"health check within {HEALTH_CHECK_TIMEOUT.total_seconds():.0f}s: "
                f"{failure_text(error)}"
            ) from None
        return report, seen, connection.ui_url
    finally:
        connection.close()


def healthcheck(
    ctx: typer.Context,
    message: str = typer.Option("ping", help="Text the worker echoes back."),
    task_queue: str | None = typer.Option(
        None,
        help="The task queue your workers poll (default: $MESHFLEET_TASK_QUEUE or 'meshfleet').",
    ),
) -> None:
    """Prove your workers are live: client -> Temporal -> a worker on the queue -> activity.

    Fails (exit 1) when no worker polls the task queue, or none answers in time.
    """
    queue = task_queue or default_task_queue()

    async def body() -> None:
        report, seen, ui_url = await run_health_check(ctx, message, queue)
        if global_options(ctx).output is OutputFormat.JSON:
            print_json({**report.to_json_dict(), "pollers": seen})
        else:
            stdout.print(
                f"health check ok: {report.message!r} answered by worker {report.worker_identity} "
                f"on task queue {report.task_queue} ({seen} worker(s) polling it)"
            )
            if ui_url:
                stdout.print(f"Web UI: {ui_url}")

    run_async(ctx, body)


def register(app: typer.Typer) -> None:
    """Add these commands to the main app."""
    app.command()(server)
    app.command()(worker)
    app.command()(version)
    app.command()(healthcheck)
