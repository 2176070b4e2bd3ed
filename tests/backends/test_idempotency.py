"""Idempotency keys: a retried call returns the first answer and changes nothing."""

from __future__ import annotations

import pytest

from activities.backends.simulated import AuditEvent, SimulatedFleetBackend
from engine.domain.backend import OperationConflictError, OperationInProgressError
from tests.backends.conftest import NAMESPACE, SERVICE, SHARED, FakeClock


async def test_starting_the_same_upgrade_twice_with_one_key_runs_it_once(
    backend: SimulatedFleetBackend, clock: FakeClock
) -> None:
    """The second start returns the first operation; one started event, one completion."""
    first = await backend.start_control_plane_upgrade("alpha", "1.33.0", idempotency_key="k")
    clock.advance(100)
    second = await backend.start_control_plane_upgrade("alpha", "1.33.0", idempotency_key="k")
    assert second.key == first.key
    assert second.started_at == first.started_at
    clock.advance(600)
    again = await backend.start_control_plane_upgrade("alpha", "1.33.0", idempotency_key="k")
    assert again.finished_at is not None
    assert len(backend.audit(event=AuditEvent.CONTROL_PLANE_UPGRADE_STARTED)) == 1
    assert len(backend.audit(event=AuditEvent.CONTROL_PLANE_UPGRADE_COMPLETED)) == 1


async def test_a_retried_drain_returns_the_annotations_from_before_the_drain(
    backend: SimulatedFleetBackend,
) -> None:
    """Replaying the drain must not report shared=false as the state to restore."""
    changes = {SHARED: "false"}
    first = await backend.set_service_annotations(
        "alpha", NAMESPACE, SERVICE, changes, idempotency_key="drain"
    )
    retried = await backend.set_service_annotations(
        "alpha", NAMESPACE, SERVICE, changes, idempotency_key="drain"
    )
    assert retried == first
    assert retried.previous == {SHARED: None}
    assert len(backend.audit(event=AuditEvent.SERVICE_DRAINED)) == 1


async def test_connecting_twice_with_one_key_is_audited_once(
    backend: SimulatedFleetBackend,
) -> None:
    """connect_peers replayed with its key is a no-op."""
    for _ in range(2):
        await backend.connect_peers("alpha", ["bravo"], idempotency_key="connect")
    assert len(backend.audit(event=AuditEvent.MESH_CONNECTED)) == 1


async def test_reusing_a_key_for_another_operation_is_a_conflict(
    backend: SimulatedFleetBackend,
) -> None:
    """One key, two different operations: the caller has a bug, say so."""
    await backend.start_control_plane_upgrade("alpha", "1.33.0", idempotency_key="same")
    with pytest.raises(OperationConflictError):
        await backend.start_cilium_upgrade("alpha", "1.18.6", idempotency_key="same")
    with pytest.raises(OperationConflictError):
        await backend.start_control_plane_upgrade("bravo", "1.33.0", idempotency_key="same")


async def test_a_second_upgrade_under_a_new_key_is_refused_while_one_runs(
    backend: SimulatedFleetBackend,
) -> None:
    """Like a cloud API, one control-plane upgrade at a time per cluster."""
    await backend.start_control_plane_upgrade("alpha", "1.33.0", idempotency_key="first")
    with pytest.raises(OperationInProgressError) as raised:
        await backend.start_control_plane_upgrade("alpha", "1.33.0", idempotency_key="second")
    assert raised.value.running_key == "first"
