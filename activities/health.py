"""The health-check activity."""

from __future__ import annotations

import os
import socket

from temporalio import activity

from engine.domain.health import HEALTH_CHECK_ACTIVITY, HealthCheckInput, HealthReport


@activity.defn(name=HEALTH_CHECK_ACTIVITY)
async def health_check(request: HealthCheckInput) -> HealthReport:
    """Echo the message with who ran it: the proof that a worker is listening."""
    info = activity.info()
    return HealthReport(
        message=request.message,
        worker_identity=f"{os.getpid()}@{socket.gethostname()}",
        activity_attempt=info.attempt,
        task_queue=info.task_queue,
    )
