"""Transitions due at the same simulated time apply in the order they were scheduled."""

from __future__ import annotations

from activities.backends.simulated import AuditEvent, SimulatedFleetBackend
from engine.domain.fleet import Fault, FaultKind
from tests.backends.conftest import FakeClock


async def test_simultaneous_transitions_apply_in_the_order_they_were_scheduled(
    backend: SimulatedFleetBackend, clock: FakeClock
) -> None:
    """Faults due at one simTime fire in the order they were injected, whatever their
    cluster, after those due earlier and before those due later."""
    due = [
        ("charlie", 50.0),
        ("alpha", 30.0),
        ("bravo", 50.0),
        ("alpha", 50.0),
        ("charlie", 30.0),
        ("bravo", 70.0),
        ("alpha", 50.0),
        ("bravo", 30.0),
    ]
    injected = [
        (
            backend.add_fault(
                cluster, Fault(kind=FaultKind.API_UNAVAILABLE, at_sim_time=at, duration="5s")
            ).id,
            at,
        )
        for cluster, at in due
    ]
    clock.advance(100)
    fired = [
        (e.details["id"], e.sim_time)
        for e in backend.audit(event=AuditEvent.FAULT_INJECTED)
        if e.details["action"] == "fired"
    ]
    in_order = [fault for at in (30.0, 50.0, 70.0) for fault in injected if fault[1] == at]
    assert fired == in_order
