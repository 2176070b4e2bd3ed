"""meshfleet's Prometheus metrics, served on the Temporal SDK's own endpoint.

One port serves both: the worker's Temporal runtime gets a Prometheus
exporter (``metrics_runtime``), the SDK reports its ``temporal_*`` metrics
there, and meshfleet's ``meshfleet_*`` metrics are created on the same
runtime's meter. Recording is done by the worker, never by workflow code:

- an activity interceptor times each member step, the built-in health gates
  and counts continuity violations from the gates' results;
- a workflow interceptor counts member outcomes from the member workflow's
  result, through ``workflow.metric_meter()`` (the SDK does not record during
  replay, so a replayed history never counts twice);
- the update run times its Approval and ScheduledStart gates through the same
  replay-safe ``workflow.metric_meter()`` (no I/O: the SDK records on the worker);
- a collector asks every network for its status now and then, for the
  ``meshfleet_networks`` gauge.

Without ``--metrics-port`` the runtime has no exporter and every recording
is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import structlog
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import MetricMeter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from engine.domain import run as contract
from engine.domain.errors import FieldError, InvalidInputError
from engine.domain.network import NetworkStatus
from engine.domain.run import GateKind
from engine.runtime.client import MeshfleetClient

log = structlog.get_logger(__name__)

#: The environment variable ``meshfleet worker --metrics-port`` defaults to.
METRICS_PORT_ENV = "MESHFLEET_METRICS_PORT"
#: How often the worker asks every network for its status (the ``meshfleet_networks`` gauge).
NETWORK_REFRESH = dt.timedelta(seconds=30)

MEMBER_UPDATES = "meshfleet_member_updates"
STEP_DURATION = "meshfleet_member_step_duration_seconds"
STEP_FAILURES = "meshfleet_member_step_failures"
GATE_WAIT = contract.GATE_WAIT_METRIC
CONTINUITY_VIOLATIONS = "meshfleet_continuity_violations"
NETWORKS = "meshfleet_networks"

#: Seconds: a step or a gate wait lasts from a moment to an hour or more.
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)


def metrics_port_from(flag: int | None, env: Mapping[str, str]) -> int | None:
    """The metrics port: the flag, else ``$MESHFLEET_METRICS_PORT``, else none (no metrics)."""
    if flag is not None:
        port: int | str = flag
        where = "--metrics-port"
    else:
        raw = env.get(METRICS_PORT_ENV, "").strip()
        if not raw:
            return None
        port, where = raw, METRICS_PORT_ENV
    if isinstance(port, str):
        if not port.isdigit():
            raise InvalidInputError(
                [FieldError(path=where, message=f"{port!r} must be a port number (1..65535)")]
            )
        port = int(port)
    if not 0 < port < 65536:
        raise InvalidInputError(
            [FieldError(path=where, message=f"{port} must be a port number (1..65535)")]
        )
    return port


def metrics_runtime(port: int, host: str = "0.0.0.0") -> Runtime:
    """A Temporal runtime serving Prometheus text on ``http://HOST:PORT/metrics``.

    Counters get the ``_total`` suffix and durations are seconds, as Prometheus
    names them; the SDK's metrics and meshfleet's share the endpoint.
    """
    buckets = {name: list(DURATION_BUCKETS) for name in (STEP_DURATION, GATE_WAIT)}
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=f"{host}:{port}",
                counters_total_suffix=True,
                durations_as_seconds=True,
                histogram_bucket_overrides=buckets,
            )
        )
    )


def client_runtime(client: Client) -> Runtime:
    """The runtime a client (and so its workers) reports metrics through."""
    return client.service_client.config.runtime or Runtime.default()


@functools.cache
def metrics_for(runtime: Runtime) -> MeshfleetMetrics:
    """meshfleet's instruments on ``runtime``'s meter, created once per runtime."""
    return MeshfleetMetrics(runtime.metric_meter)


class MeshfleetMetrics:
    """meshfleet's own instruments, created once on a runtime's meter."""

    def __init__(self, meter: MetricMeter) -> None:
        self.step_duration = meter.create_histogram_float(
            STEP_DURATION, "How long one member step took, by step", "s"
        )
        self.step_failures = meter.create_counter(
            STEP_FAILURES, "Member step attempts that raised, by step (retries count each)"
        )
        self.gate_wait = meter.create_histogram_float(
            GATE_WAIT, contract.GATE_WAIT_DESCRIPTION, "s"
        )
        self.continuity_violations = meter.create_counter(
            CONTINUITY_VIOLATIONS,
            "Global services an endpoints gate found below their baseline when it gave up",
        )
        self.networks = meter.create_gauge(
            NETWORKS, "Networks by status, as they answered the last refresh"
        )


class MetricsInterceptor(Interceptor):
    """The worker interceptor that records meshfleet's metrics (see the module docstring)."""

    def __init__(self, metrics: MeshfleetMetrics) -> None:
        self.metrics = metrics

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Time member steps and health gates."""
        return _ActivityMetrics(next, self.metrics)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        """Count member outcomes (replay-safe: the workflow meter skips replays)."""
        return _MemberOutcomeMetrics


class _ActivityMetrics(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, metrics: MeshfleetMetrics) -> None:
        super().__init__(next)
        self._metrics = metrics

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        name = activity.info().activity_type
        # A peer wait is its own label ("DrainWait"), so "Drain" counts once per member.
        known = contract.STEP_OF_ACTIVITY.get(name)
        step = (
            None if known is None else known.value + ("Wait" if name in contract.PEER_WAITS else "")
        )
        gate = _gate_kind(input.args)
        started = time.monotonic()
        try:
            result = await super().execute_activity(input)
        except BaseException:
            if step is not None:
                self._metrics.step_failures.add(1, {"step": step})
            raise
        finally:
            elapsed = time.monotonic() - started
            if step is not None:
                self._metrics.step_duration.record(elapsed, {"step": step})
            if gate is not None:
                self._metrics.gate_wait.record(elapsed, {"kind": gate.value})
        if isinstance(result, contract.ServiceEndpointsResult) and result.below_baseline:
            self._metrics.continuity_violations.add(len(result.below_baseline))
        return result


def _gate_kind(args: Sequence[Any]) -> GateKind | None:
    """The built-in gate an activity call is, when it waits as one (a timeout to wait up to)."""
    request = args[0] if args else None
    if isinstance(request, contract.MeshHealthRequest) and request.timeout:
        return GateKind.MESH_HEALTH
    if isinstance(request, contract.ServiceEndpointsRequest) and request.baseline is not None:
        return GateKind.ENDPOINTS_BASELINE
    return None


class _MemberOutcomeMetrics(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        result = await super().execute_workflow(input)
        if isinstance(result, contract.MemberUpdateResult) and input.args:
            member = input.args[0]
            network = member.network if isinstance(member, contract.MemberUpdateInput) else ""
            workflow.metric_meter().create_counter(
                MEMBER_UPDATES, "Member updates that ended, by network and outcome"
            ).add(1, {"network": network, "outcome": result.outcome.value})
        return result


def record_network_statuses(
    metrics: MeshfleetMetrics, statuses: list[NetworkStatus | None]
) -> None:
    """Set the ``meshfleet_networks`` gauge: every status, zero when no network has it."""
    for status in [*NetworkStatus, None]:
        label = status.value if status is not None else "Unknown"
        metrics.networks.set(sum(1 for s in statuses if s is status), {"status": label})


@contextlib.asynccontextmanager
async def network_status_collector(
    client: Client, metrics: MeshfleetMetrics, interval: dt.timedelta = NETWORK_REFRESH
) -> AsyncIterator[None]:
    """Refresh the ``meshfleet_networks`` gauge now and every ``interval`` while inside."""
    reader = MeshfleetClient(client)

    async def refresh_forever() -> None:
        while True:
            try:
                summaries = await reader.list_networks()
            except Exception as error:  # a metrics refresh must never stop the worker
                log.warning("metrics.networks_refresh_failed", error=str(error))
            else:
                record_network_statuses(metrics, [s.status for s in summaries])
            await asyncio.sleep(interval.total_seconds())

    task = asyncio.create_task(refresh_forever(), name="meshfleet-network-metrics")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
