"""The simulated fleet: the embedded default backend, its world kept in SQLite.

Use::

    backend = SimulatedFleetBackend(state_dir)          # $MESHFLEET_STATE_DIR in production
    backend.load(load_fleet(Path("fleet.yaml")), reset=True)
    await backend.start_control_plane_upgrade("eu-west-1", "1.33.2", idempotency_key=k)
    backend.audit(event=AuditEvent.VIOLATION)           # the ground truth
    backend.violations()                                # with start and end simTimes
    backend.add_fault("eu-west-1", Fault(kind=FaultKind.HANG, on=FaultTrigger.CILIUM_UPGRADE))
    backend.clear_faults("eu-west-1")

The world is a lazily advanced discrete-event model (``world``), stored in one
SQLite file (``store``) that every process opening the same state directory
shares. Fault semantics:

- ``meshPartition``, ``endpointsLost`` (``service`` is ``namespace/name``, or
  every service) and ``apiUnavailable`` open a window when their trigger
  happens, for ``duration`` or until cleared; ``times`` triggers at most.
- ``fail``, ``hang`` and ``slow`` act on an operation: with ``on:
  controlPlaneUpgrade | ciliumUpgrade | join`` on operations of that kind;
  with ``on: afterUpgrade`` or ``atSimTime`` they arm at that moment and act
  on the next operation of any kind on the cluster.
- Clearing a fault closes its windows and resumes operations it hung.
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
