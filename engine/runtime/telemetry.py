"""Logs and traces, configured once per process.

Logs: structlog, event names plus fields; human console output on a terminal,
JSON lines otherwise (or as ``--log-format`` says). Traces: an OpenTelemetry
tracer provider from the standard ``OTEL_*`` variables — a console exporter
with ``OTEL_TRACES_EXPORTER=console``, OTLP with ``otlp`` (the ``otlp`` extra),
and nothing at all when none is set.

One trace per update run: the client's ``StartWorkflow`` span is its root,
the SDK's tracing interceptor (``MeshfleetTracingInterceptor``, a subclass
that adds ``meshfleet.network``, ``meshfleet.run`` and ``meshfleet.member``
attributes to every workflow span) carries it into the run workflow, each
member's child workflow and each step's activity, and ``traced_backend``
adds one span per fleet-backend call under the step that made it:
run -> member -> step -> backend call.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, cast

import structlog
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.util.types import Attributes, AttributeValue
from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.opentelemetry import (
    TracingInterceptor,
    TracingWorkflowInboundInterceptor,
)
from temporalio.worker import StartChildWorkflowInput, WorkflowInterceptorClassInput

from engine.domain.backend import FleetBackend
from engine.domain.errors import UnavailableError

_configured_logging: str | None = None
_configured_tracing = False


def configure_logging(log_format: str = "auto", level: str | None = None) -> None:
    """Configure structlog (and stdlib logging through it). Later calls may change format."""
    global _configured_logging
    resolved = log_format
    if resolved == "auto":
        resolved = "console" if sys.stderr.isatty() else "json"
    if _configured_logging == resolved:
        return
    level_name = (level or os.environ.get("MESHFLEET_LOG_LEVEL") or "WARNING").upper()
    numeric = logging.getLevelNamesMapping().get(level_name, logging.WARNING)
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if resolved == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(
        level=numeric, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
    _configured_logging = resolved


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    """A logger writing to the *current* ``sys.stderr``.

    Binding the stream once at configuration would keep a stream that may be
    closed later (a redirected or captured stderr); a log call must never fail
    the work it describes.
    """
    return structlog.PrintLogger(file=sys.stderr)


def configure_tracing(service_name: str = "meshfleet") -> None:
    """Install a tracer provider when ``OTEL_TRACES_EXPORTER`` asks for one; else do nothing."""
    global _configured_tracing
    if _configured_tracing:
        return
    _configured_tracing = True
    names = [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    names = [n for n in names if n != "none"]
    if not names:
        return
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = TracerProvider(resource=resource)
    for name in names:
        provider.add_span_processor(_processor_for(name))
    trace.set_tracer_provider(provider)


def _processor_for(name: str) -> SimpleSpanProcessor | BatchSpanProcessor:
    if name == "console":
        return SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr))
    if name == "otlp":
        return BatchSpanProcessor(_otlp_exporter())
    raise UnavailableError(
        f"OTEL_TRACES_EXPORTER={name!r} is not supported; use 'console', 'otlp' or 'none'"
    )


def _otlp_exporter() -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
            OTLPSpanExporter,
        )
    except ImportError:
        raise UnavailableError(
            "OTEL_TRACES_EXPORTER=otlp needs the OTLP exporter: pip install 'meshfleet[otlp]'"
        ) from None
    exporter: SpanExporter = OTLPSpanExporter()
    return exporter


# --- one trace per run ---------------------------------------------------------------------


def workflow_attributes(workflow_id: str) -> dict[str, AttributeValue]:
    """Span attributes naming the network, run and member a workflow id belongs to.

    ``updaterun/<network>/<run>[/member/<cluster>]`` and ``network/<name>``; any
    other id gives none.
    """
    parts = workflow_id.split("/")
    if parts[0] == "updaterun" and len(parts) >= 3:
        found: dict[str, AttributeValue] = {
            "meshfleet.network": parts[1],
            "meshfleet.run": parts[2],
        }
        if len(parts) == 5 and parts[3] == "member":
            found["meshfleet.member"] = parts[4]
        return found
    if parts[0] == "network" and len(parts) == 2:
        return {"meshfleet.network": parts[1]}
    return {}


class MeshfleetTracingInterceptor(TracingInterceptor):
    """The SDK's tracing interceptor, with the network, run and member on its spans.

    Client and activity spans get them from the workflow id they carry; workflow
    spans from the workflow's own id.
    """

    @contextlib.contextmanager
    def _start_as_current_span(
        self, name: str, *, attributes: Attributes, **kwargs: Any
    ) -> Iterator[None]:
        merged = dict(attributes or {})
        merged.update(workflow_attributes(str(merged.get("temporalWorkflowID") or "")))
        with super()._start_as_current_span(name, attributes=merged, **kwargs):
            yield

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[TracingWorkflowInboundInterceptor]:
        """The SDK's workflow tracing, plus meshfleet's attributes."""
        super().workflow_interceptor_class(input)
        return _MeshfleetWorkflowTracing


class _MeshfleetWorkflowTracing(TracingWorkflowInboundInterceptor):
    def _completed_span(
        self, span_name: str, *, additional_attributes: Any = None, **kwargs: Any
    ) -> None:
        from temporalio import workflow

        attributes = workflow_attributes(workflow.info().workflow_id)
        child = kwargs.get("add_to_outbound")
        if isinstance(child, StartChildWorkflowInput):
            # The span that starts a member belongs to that member.
            attributes.update(workflow_attributes(child.id))
        attributes.update(additional_attributes or {})
        super()._completed_span(span_name, additional_attributes=attributes, **kwargs)


def client_tracer(client: Client) -> trace.Tracer | None:
    """The tracer of the client's tracing interceptor: the worker's spans go where its go."""
    for interceptor in client.config()["interceptors"]:
        if isinstance(interceptor, TracingInterceptor):
            return interceptor.tracer
    return None


def traced_backend(backend: FleetBackend, tracer: trace.Tracer) -> FleetBackend:
    """``backend`` with one span per call (``backend.<method>``), under the calling step."""
    return cast(FleetBackend, _TracedBackend(backend, tracer))


class _TracedBackend:
    """Wraps every coroutine method of a backend in a client span; the rest passes through."""

    def __init__(self, backend: FleetBackend, tracer: trace.Tracer) -> None:
        self._backend = backend
        self._tracer = tracer

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._backend, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(target):
            return target
        return self._traced(name, target)

    def _traced(self, name: str, target: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(target)
        async def call(*args: Any, **kwargs: Any) -> Any:
            attributes: dict[str, AttributeValue] = {
                "meshfleet.backend.method": name,
                **workflow_attributes(activity.info().workflow_id or ""),
            }
            with self._tracer.start_as_current_span(
                f"backend.{name}", kind=trace.SpanKind.CLIENT, attributes=attributes
            ):
                return await target(*args, **kwargs)

        return call
