"""The simulated fleet: the embedded default backend, its world kept in SQLite.

Open it with ``SimulatedFleetBackend(state_dir)``; load a fleet file with
``backend.load(load_fleet(path))``. The world is a lazily advanced
discrete-event model (``world``), stored in one SQLite file (``store``) that
every process opening the same state directory shares.
"""

from activities.backends.simulated.backend import (
    Clock,
    SimulatedFleetBackend,
    WorldAlreadyLoadedError,
    WorldNotLoadedError,
)
from activities.backends.simulated.examples import example_names, example_text
from activities.backends.simulated.store import DATABASE_NAME
from activities.backends.simulated.world import (
    AuditEntry,
    AuditEvent,
    FaultRecord,
    ViolationRecord,
    World,
)

__all__ = [
    "DATABASE_NAME",
    "AuditEntry",
    "AuditEvent",
    "Clock",
    "FaultRecord",
    "SimulatedFleetBackend",
    "ViolationRecord",
    "World",
    "WorldAlreadyLoadedError",
    "WorldNotLoadedError",
    "example_names",
    "example_text",
]
