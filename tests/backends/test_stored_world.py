"""A world stored by an earlier version loads, and carries on exactly as it would have.

``samples/world-before.json`` is a world document as the store wrote it before the
simulator was split into modules (``samples/record_world.py`` says how it was made).
"""

from __future__ import annotations

import json
from pathlib import Path

from activities.backends.simulated import DATABASE_NAME, SimulatedFleetBackend
from activities.backends.simulated.store import WorldStore
from tests.backends.conftest import FakeClock
from tests.backends.samples.record_world import (
    AFTER,
    AUDIT_AFTER,
    BEFORE,
    audit_document,
    carry_on,
    normalized,
    store_document,
    world_document,
)


def store_sample(state_dir: Path) -> None:
    """The sample document, byte for byte, in a fresh store's file."""
    store_document(state_dir, BEFORE.read_text().strip())


def test_a_stored_world_reads_back_to_the_same_document(world_dir: Path) -> None:
    """Loading and writing the stored world changes nothing in it: the format is the same
    (``linksReady`` is a set, written in whatever order the writing process hashed it)."""
    store_sample(world_dir)
    store = WorldStore(world_dir / DATABASE_NAME)
    with store.connection() as connection:
        world = store.read_world(connection)
    assert world is not None
    written = json.loads(world.model_dump_json(by_alias=True))
    assert normalized(written) == normalized(json.loads(BEFORE.read_text()))


async def test_a_stored_world_carries_on_as_the_version_that_wrote_it_did(
    world_dir: Path,
) -> None:
    """Its pending transitions, hung upgrade, faults and violations play out as recorded."""
    store_sample(world_dir)
    clock = FakeClock()
    clock.advance(40)  # where the sample's world stopped (one clock second per simulated one)
    backend: SimulatedFleetBackend = await carry_on(world_dir, clock)
    assert audit_document(backend) == AUDIT_AFTER.read_text()
    assert world_document(backend) == json.loads(AFTER.read_text())
