"""Write-behind: a private world lives in memory and reaches its file only when stored."""

from __future__ import annotations

from pathlib import Path

from activities.backends.simulated import AuditEvent, SimulatedFleetBackend
from engine.domain.fleet import parse_fleet
from tests.backends.conftest import (
    CHECKOUT,
    MEMBERS,
    NAMESPACE,
    SERVICE,
    SHARED,
    FakeClock,
    fleet_document,
)

NEVER_DUE = 3600.0


def private_world(world_dir: Path, clock: FakeClock, write_behind: float) -> SimulatedFleetBackend:
    backend = SimulatedFleetBackend(world_dir, clock=clock, write_behind=write_behind)
    backend.load(parse_fleet(fleet_document()), reset=True)
    return backend


async def test_changes_reach_the_file_only_when_stored_and_the_owner_sees_them_at_once(
    world_dir: Path, clock: FakeClock
) -> None:
    """Between stores, another reader of the file sees the world as last stored; the
    owning process sees its own changes and audit entries at once; flush stores both."""
    backend = private_world(world_dir, clock, NEVER_DUE)
    await backend.start_control_plane_upgrade("alpha", "1.33.0", idempotency_key="cp-alpha")
    await backend.set_service_annotations(
        "bravo", NAMESPACE, SERVICE, {SHARED: "false"}, idempotency_key="drain-bravo"
    )
    reader = SimulatedFleetBackend(world_dir, clock=clock)
    assert "cp-alpha" not in reader.world().operations, "not stored yet"
    assert not reader.audit(event=AuditEvent.SERVICE_DRAINED)

    assert "cp-alpha" in backend.world().operations
    assert [e.cluster for e in backend.audit(event=AuditEvent.SERVICE_DRAINED)] == ["bravo"]

    backend.flush()
    stored = SimulatedFleetBackend(world_dir, clock=clock)
    assert "cp-alpha" in stored.world().operations
    drained = stored.audit(event=AuditEvent.SERVICE_DRAINED)
    assert [(e.cluster, e.details["service"]) for e in drained] == [("bravo", SERVICE)]
    events = [e.event for e in stored.audit()]
    assert events.index(AuditEvent.CONTROL_PLANE_UPGRADE_STARTED) < events.index(
        AuditEvent.SERVICE_DRAINED
    ), "the audit log keeps the order things happened in"


async def test_a_store_comes_due_by_itself_after_the_interval(
    world_dir: Path, clock: FakeClock
) -> None:
    """With an interval of 0 every access is stored as it happens."""
    backend = private_world(world_dir, clock, 0.0)
    await backend.set_service_annotations(
        "alpha", NAMESPACE, SERVICE, {SHARED: "false"}, idempotency_key="drain-alpha"
    )
    reader = SimulatedFleetBackend(world_dir, clock=clock)
    service = (await reader.list_global_services(MEMBERS))[0]
    assert service.key == CHECKOUT
    assert service.per_cluster["alpha"].annotations[SHARED] == "false"
    assert [e.cluster for e in reader.audit(event=AuditEvent.SERVICE_DRAINED)] == ["alpha"]
