"""The health check: proves client -> server -> worker -> activity -> result end to end."""

from __future__ import annotations

from engine.domain.model import DomainModel

HEALTH_CHECK_WORKFLOW = "HealthCheck"
HEALTH_CHECK_ACTIVITY = "health_check"


class HealthCheckInput(DomainModel):
    """What the caller sends; echoed back so the round trip is visible."""

    message: str = "ping"


class HealthReport(DomainModel):
    """What the worker's activity saw."""

    message: str
    worker_identity: str
    activity_attempt: int
    task_queue: str
