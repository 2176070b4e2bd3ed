"""The worker: the one module that wires every workflow and activity.

A worker polls one task queue (``settings.task_queue()``) on the connected
Temporal. Scaling out is running more workers: Temporal spreads the work.
SIGINT and SIGTERM stop polling, let running activities finish within the
graceful-shutdown timeout, and exit.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import structlog
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.auto_upgrade import AutoUpgradeActivities
from activities.health import health_check
from activities.member_steps import MemberStepActivities
from activities.network import HolderActivities, NetworkActivities
from activities.run_steps import RunStepActivities
from engine.domain.backend import FleetBackend
from engine.runtime import settings
from engine.runtime.metrics import MetricsInterceptor, client_runtime, metrics_for
from engine.runtime.runs import start_update_run
from engine.runtime.telemetry import client_tracer, traced_backend
from workflows.auto_upgrade import AutoUpgradeWorkflow
from workflows.health import HealthCheckWorkflow
from workflows.member_update import MemberUpdateWorkflow
from workflows.network import NetworkWorkflow
from workflows.plan_inputs import ReadPlanInputsWorkflow
from workflows.update_run import UpdateRunWorkflow

log = structlog.get_logger(__name__)

#: Our pure modules are deterministic: pass them through the sandbox instead of
#: re-importing them for every workflow run. From ``workflows``, only the modules of
#: plain values and data classes (no workflow API): the sandbox would otherwise run
#: them again for each of a run's members.
PASSTHROUGH_MODULES = (
    "engine.domain",
    "strategies",
    "yaml",
    "structlog",
    "workflows.policies",
    "workflows.member_restore",
)

GRACEFUL_SHUTDOWN = timedelta(seconds=30)


def all_workflows() -> list[type[Any]]:
    """Every workflow meshfleet runs."""
    return [
        HealthCheckWorkflow,
        UpdateRunWorkflow,
        MemberUpdateWorkflow,
        NetworkWorkflow,
        AutoUpgradeWorkflow,
        ReadPlanInputsWorkflow,
    ]


def all_activities(backend: FleetBackend, client: Client) -> list[Callable[..., Any]]:
    """Every activity meshfleet runs, bound to the backend and the Temporal client."""
    run_steps = RunStepActivities(backend, client)
    member_steps = MemberStepActivities(backend, client)
    network = NetworkActivities(backend, poll_interval=settings.poll_interval())
    auto_upgrade = AutoUpgradeActivities(backend, client, start_update_run)
    holders = HolderActivities(client)
    return [
        health_check,
        *run_steps.all(),
        *member_steps.all(),
        *network.all(),
        *holders.all(),
        *auto_upgrade.all(),
    ]


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox, with meshfleet's pure modules passed through."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
    )


def build_worker(
    client: Client,
    task_queue: str,
    *,
    backend: FleetBackend | None = None,
    workflows: Sequence[type[Any]] | None = None,
    activities: Sequence[Callable[..., Any]] | None = None,
) -> Worker:
    """A worker for ``task_queue`` with every workflow and activity (or the ones given).

    Without ``backend`` and ``activities`` only the health check's activity is
    registered (enough for ``meshfleet healthcheck``). meshfleet's metrics go to
    the client's runtime (a Prometheus endpoint when it has one) and its spans to
    the client's tracer: each backend call is a span under the step that made it.
    """
    tracer = client_tracer(client)
    if backend is not None and tracer is not None:
        backend = traced_backend(backend, tracer)
    if activities is None:
        activities = all_activities(backend, client) if backend is not None else [health_check]
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(workflows if workflows is not None else all_workflows()),
        activities=list(activities),
        workflow_runner=workflow_runner(),
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        interceptors=[MetricsInterceptor(metrics_for(client_runtime(client)))],
    )


async def run_worker_until_signalled(worker: Worker) -> None:
    """Run ``worker`` until SIGINT or SIGTERM, then shut it down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker.started", task_queue=worker.task_queue)
    async with worker:
        await stop.wait()
        log.info("worker.stopping", task_queue=worker.task_queue)
    log.info("worker.stopped", task_queue=worker.task_queue)


async def serve_health(port: int, host: str = "0.0.0.0") -> asyncio.Server:
    """A minimal HTTP endpoint for liveness/readiness probes: ``GET /healthz`` -> 200."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readline()
        ok = request.split(b" ")[1:2] in ([b"/healthz"], [b"/readyz"])
        body = b"ok\n" if ok else b"not found\n"
        status = b"200 OK" if ok else b"404 Not Found"
        writer.write(
            b"HTTP/1.1 "
            + status
            + b"\r\nContent-Type: text/plain\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, host, port)
    log.info("worker.health_serving", port=port)
    return server
