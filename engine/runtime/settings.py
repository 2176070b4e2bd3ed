"""Runtime settings: where state lives and how to reach Temporal.

Temporal's own conventions decide the connection (``TEMPORAL_ADDRESS``,
``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS_*`` and config
profiles through ``temporalio.envconfig``); meshfleet adds only
``MESHFLEET_STATE_DIR`` for its local state (embedded server database,
simulated fleet).
"""

from __future__ import annotations

import os
from pathlib import Path

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
