"""Record the stored-world sample that ``test_stored_world.py`` loads.

Run from the repository root with the code whose file format the sample pins::

    .venv/bin/python -m tests.backends.samples.record_world

It builds a busy world through the public backend with a fake clock (an upgrade
mid agent-restart, a hung upgrade, a join under way, a drain, faults of every
trigger, a violation, scheduled transitions pending), copies the world document
exactly as the store wrote it (``world-before.json``), then replays the same
reads and changes ``test_stored_world.py`` makes and writes what they end with
(``world-after.json``, ``audit-after.json``). Never re-record to make a failing
test pass: a difference means the file format or the simulator's behaviour moved.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from activities.backends.simulated import DATABASE_NAME, SimulatedFleetBackend
from activities.backends.simulated.store import WorldStore
from engine.domain.fleet import Fault, FaultKind, FaultTrigger, parse_fleet
from tests.backends.conftest import MEMBERS, NAMESPACE, SERVICE, SHARED, FakeClock, fleet_document
from tests.backends.conftest import cluster as cluster_entry

HERE = Path(__file__).parent
BEFORE = HERE / "world-before.json"
AFTER = HERE / "world-after.json"
AUDIT_AFTER = HERE / "audit-after.json"


def stored_document(state_dir: Path) -> str:
    """The world document exactly as it is in the store's file."""
    with sqlite3.connect(state_dir / DATABASE_NAME) as connection:
        row = connection.execute("SELECT document FROM world WHERE id = 1").fetchone()
    return str(row[0])


def store_document(state_dir: Path, document: str) -> None:
    """Put a world document into a fresh store's file, byte for byte (no audit log)."""
    with WorldStore(state_dir / DATABASE_NAME).connection():
        pass  # creates the file and its tables
    with sqlite3.connect(state_dir / DATABASE_NAME) as connection:
        connection.execute("INSERT INTO world (id, document) VALUES (1, ?)", (document,))


async def busy_world(state_dir: Path, clock: FakeClock) -> None:
    """Bring a world to a moment with something of every kind under way."""
    clusters = [cluster_entry(name, i + 1) for i, name in enumerate(MEMBERS)]
    clusters.append(
        cluster_entry(
            "delta",
            4,
            faults=[{"on": "join", "kind": "endpointsLost", "duration": "15s"}],
        )
    )
    backend = SimulatedFleetBackend(state_dir, clock=clock)
    services = [
        {
            "namespace": NAMESPACE,
            "name": SERVICE,
            "clusters": {name: 3 for name in MEMBERS},
            "minReadyEndpoints": 7,  # a drain of one member is a violation
        }
    ]
    document = fleet_document(clusters=clusters, globalServices=services)
    backend.load(parse_fleet(document), reset=True)
    hang = backend.add_fault("bravo", Fault(kind=FaultKind.HANG, on=FaultTrigger.CILIUM_UPGRADE))
    backend.add_fault(
        "charlie",
        Fault(
            kind=FaultKind.MESH_PARTITION,
            on=FaultTrigger.AFTER_UPGRADE,
            duration="30s",
            peers=["alpha"],
        ),
    )
    backend.add_fault(
        "alpha", Fault(kind=FaultKind.API_UNAVAILABLE, at_sim_time=700, duration="20s")
    )
    backend.add_fault(  # due at the same simulated time as alpha's: order kept
        "bravo", Fault(kind=FaultKind.API_UNAVAILABLE, at_sim_time=700, duration="5s")
    )
    backend.add_fault("alpha", Fault(kind=FaultKind.SLOW, at_sim_time=650, factor=2.0))
    spent = backend.add_fault("charlie", Fault(kind=FaultKind.FAIL, at_sim_time=5))
    backend.clear_faults(fault_id=spent.id)
    await backend.start_cilium_upgrade("bravo", "1.18.6", idempotency_key="bravo-cilium")
    await backend.start_cilium_upgrade("charlie", "1.18.6", idempotency_key="charlie-cilium")
    await backend.start_control_plane_upgrade("alpha", "1.33.0", idempotency_key="alpha-cp")
    await backend.set_service_annotations(
        "bravo", NAMESPACE, SERVICE, {SHARED: "false"}, idempotency_key="drain"
    )
    await backend.enable_mesh("delta", network="prod-mesh", idempotency_key="join")
    await backend.connect_peers("delta", MEMBERS, idempotency_key="delta-to-all")
    clock.advance(40)
    await backend.mesh_health([*MEMBERS, "delta"])
    assert hang.id  # cleared later, by ``carry_on``


async def carry_on(state_dir: Path, clock: FakeClock) -> SimulatedFleetBackend:
    """What the test does to the stored world: read, clear the hang, run to the end."""
    backend = SimulatedFleetBackend(state_dir, clock=clock)
    clock.advance(100)
    await backend.mesh_health([*MEMBERS, "delta"])
    await backend.set_service_annotations(
        "bravo", NAMESPACE, SERVICE, {SHARED: None}, idempotency_key="restore"
    )
    backend.clear_faults("bravo")
    clock.advance(1_000)
    await backend.start_cilium_upgrade("alpha", "1.18.6", idempotency_key="alpha-cilium")
    clock.advance(10_000)
    await backend.get_operation("alpha", "alpha-cilium")
    return backend


def audit_document(backend: SimulatedFleetBackend) -> str:
    """The whole audit log in its documented JSON shape."""
    return json.dumps([e.to_json_dict() for e in backend.audit()], indent=1) + "\n"


def normalized(document: dict[str, Any]) -> dict[str, Any]:
    """A world document with its one set (``linksReady``, in hash order) sorted."""
    return {**document, "linksReady": sorted(document["linksReady"])}


def world_document(backend: SimulatedFleetBackend) -> dict[str, Any]:
    """The advanced world as JSON data (no transition left pending, so no order to vary)."""
    world = backend.world()
    assert not world.events, "the world must have run out of scheduled transitions"
    return normalized(world.model_dump(mode="json", by_alias=True))


async def main() -> None:
    with TemporaryDirectory() as first, TemporaryDirectory() as second:
        clock = FakeClock()
        await busy_world(Path(first), clock)
        document = stored_document(Path(first))
        BEFORE.write_text(document + "\n")
        # As the test does: the document alone in a new file, read by a new backend.
        store_document(Path(second), document)
        backend = await carry_on(Path(second), clock)
        AFTER.write_text(json.dumps(world_document(backend), indent=1) + "\n")
        AUDIT_AFTER.write_text(audit_document(backend))


if __name__ == "__main__":
    asyncio.run(main())
