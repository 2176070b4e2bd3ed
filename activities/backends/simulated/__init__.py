"""The simulated fleet: the embedded default backend, its world kept in SQLite.

Use::

    backend = SimulatedFleetBackend(state_dir)          # $MESHFLEET_STATE_DIR in production
    backend.load(load_fleet(Path("fleet.yaml")), reset=True)
    await backend.start_control_plane_upgrade("eu-west-1", "1.33.2", idempotency_key=k)
    backend.audit(event=AuditEvent.VIOLATION)           # the ground truth
    backend.violations()                                # with start and end simTimes
    backend.add_fault("eu-west-1", Fault(kind=FaultKind.HANG, on=FaultTrigger.CILIUM_UPGRADE))
    backend.clear_faults("eu-west-1")

The world is a lazily advanced discrete-event model stored in one SQLite file
(``store``) that every process opening the same state directory shares. Its
modules, one job each:

- ``model``: the persisted world document (``World``) and the audit log's entries;
- ``event_queue``: the transitions scheduled to come, a heap on (time, order);
- ``timeline``: advancing time, the mesh's links and caches, the continuity monitor;
- ``faults``: fault semantics (which trigger fires what, hangs, clearing);
- ``operations``: upgrades and joins, their timelines, progress and idempotency;
- ``world``: ``Simulation`` (the layers above in one class), loading a fleet,
  mesh configuration, annotations and the reads;
- ``backend``: ``SimulatedFleetBackend``, one transaction per call.
"""

from activities.backends.simulated.backend import (
    Clock,
    SimulatedFleetBackend,
    WorldAlreadyLoadedError,
    WorldNotLoadedError,
)
from activities.backends.simulated.examples import example_names, example_text
from activities.backends.simulated.model import (
    AuditEntry,
    AuditEvent,
    FaultRecord,
    ViolationRecord,
    World,
)
from activities.backends.simulated.store import DATABASE_NAME

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
