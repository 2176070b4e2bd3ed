"""Logs and traces, configured once per process.

Logs: structlog, event names plus fields; human console output on a terminal,
JSON lines otherwise (or as ``--log-format`` says). Traces: an OpenTelemetry
tracer provider from the standard ``OTEL_*`` variables — a console exporter
with ``OTEL_TRACES_EXPORTER=console``, OTLP with ``otlp`` (the ``otlp`` extra),
and nothing at all when none is set.
"""

from __future__ import annotations

import logging
import os
import sys

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
