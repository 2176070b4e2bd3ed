"""Runtime settings: where state lives and how to reach Temporal.

Temporal's own conventions decide the connection (``TEMPORAL_ADDRESS``,
``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS_*`` and config
profiles through ``temporalio.envconfig``); meshfleet adds only
``MESHFLEET_STATE_DIR`` for its local state (embedded server database,
simulated fleet).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from engine.domain.durations import parse_duration
from engine.domain.errors import FieldError, InvalidInputError

STATE_DIR_ENV = "MESHFLEET_STATE_DIR"
DEFAULT_STATE_DIR = Path(".meshfleet")


def state_dir() -> Path:
    """The local state directory (``$MESHFLEET_STATE_DIR``, else ``./.meshfleet``)."""
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


TASK_QUEUE_ENV = "MESHFLEET_TASK_QUEUE"
#: The one task queue meshfleet's workflows and activities run on (unless overridden).
DEFAULT_TASK_QUEUE = "meshfleet"


def task_queue() -> str:
    """The task queue (``$MESHFLEET_TASK_QUEUE``, else ``meshfleet``)."""
    return os.environ.get(TASK_QUEUE_ENV) or DEFAULT_TASK_QUEUE


MESH_READY_TIMEOUT_ENV = "MESHFLEET_MESH_READY_TIMEOUT"
#: How long a join or removal waits for the whole mesh to report ready before the
#: network is Degraded.
DEFAULT_MESH_READY_TIMEOUT = dt.timedelta(minutes=10)

POLL_INTERVAL_ENV = "MESHFLEET_POLL_INTERVAL"
#: How often an activity waiting on the fleet (mesh ready, a drain) asks again.
DEFAULT_POLL_INTERVAL = dt.timedelta(seconds=1)


def _duration(env: str, default: dt.timedelta) -> dt.timedelta:
    text = os.environ.get(env)
    if not text:
        return default
    try:
        value = parse_duration(text)
    except ValueError as error:
        raise InvalidInputError([FieldError(path=f"${env}", message=str(error))]) from None
    if value <= dt.timedelta():
        raise InvalidInputError([FieldError(path=f"${env}", message="must be positive")])
    return value


def mesh_ready_timeout() -> dt.timedelta:
    """``$MESHFLEET_MESH_READY_TIMEOUT`` (``90s``, ``10m``...), else 10 minutes."""
    return _duration(MESH_READY_TIMEOUT_ENV, DEFAULT_MESH_READY_TIMEOUT)


DEGRADED_RECHECK_INTERVAL_ENV = "MESHFLEET_DEGRADED_RECHECK_INTERVAL"
#: How often an idle Degraded network reads its mesh again (at least a second).
DEFAULT_DEGRADED_RECHECK_INTERVAL = dt.timedelta(minutes=5)


def degraded_recheck_interval() -> dt.timedelta:
    """``$MESHFLEET_DEGRADED_RECHECK_INTERVAL`` (``30s``, ``5m``...), else 5 minutes."""
    value = _duration(DEGRADED_RECHECK_INTERVAL_ENV, DEFAULT_DEGRADED_RECHECK_INTERVAL)
    if value < dt.timedelta(seconds=1):
        raise InvalidInputError(
            [FieldError(path=f"${DEGRADED_RECHECK_INTERVAL_ENV}", message="must be at least 1s")]
        )
    return value


def poll_interval() -> dt.timedelta:
    """``$MESHFLEET_POLL_INTERVAL`` (``1s``, ``200ms``...), else 1 second."""
    return _duration(POLL_INTERVAL_ENV, DEFAULT_POLL_INTERVAL)
