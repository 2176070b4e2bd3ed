"""``SimulatedFleetBackend``: the FleetBackend over the simulated world in SQLite.

Every call is one transaction: load the world, advance it to "now" (wall
clock mapped through ``timeScale``), act, store it with the audit entries it
produced. Beyond the protocol, the class offers what only a simulation has:
loading a fleet file, injecting and clearing faults, the audit log, the
continuity violations and simulated time.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import structlog

from activities.backends.simulated import event_queue
from activities.backends.simulated.model import (
    AuditEntry,
    AuditEvent,
    FaultRecord,
    ViolationRecord,
    World,
)
from activities.backends.simulated.store import DATABASE_NAME, WorldStore
from activities.backends.simulated.world import Simulation
from engine.domain.backend import OperationKind, OperationProgress
from engine.domain.errors import MeshfleetError, NotFoundError
from engine.domain.fleet import Fault, SimulatedFleet
from engine.domain.membership import JoinCheck, MemberDescription, join_prerequisite_failures
from engine.domain.mesh import MeshHealth, NotReadyLink
from engine.domain.services import AnnotationChange, GlobalService

T = TypeVar("T")

log = structlog.get_logger(__name__)

#: Wall-clock time in seconds since the epoch (``time.time`` in production).
Clock = Callable[[], float]


class WorldNotLoadedError(NotFoundError):
    """No fleet has been loaded into the state directory yet."""


class WorldAlreadyLoadedError(MeshfleetError):
    """A world exists and ``load`` was not asked to replace it."""

    exit_code = 2


class SimulatedFleetBackend:
    """The embedded default backend: a persistent, fault-injectable simulated fleet.

    ``SimulatedFleetBackend(state_dir)`` opens (or will create) the world in
    ``state_dir / "simulated-fleet.sqlite3"``; every process that opens the same
    directory shares it. ``clock`` supplies wall-clock time.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        clock: Clock = time.time,
        write_behind: float | None = None,
    ) -> None:
        """``write_behind`` (seconds): this process is the world's only writer, so the world
        lives in memory and is stored, with the audit entries since the last store, at most
        that often (and by :meth:`flush`); accesses in between touch no file and run on the
        caller's thread. Other processes then read a world and an audit log up to that old.
        A failing access keeps what advancing applied. For private worlds (``meshfleet
        simulate``, the benchmark), where a transaction per access of 51 members at once
        would dominate everything else."""
        self.path = state_dir / DATABASE_NAME
        self._store = WorldStore(self.path, keep_open=True)
        self._clock = clock
        #: The world as this process last read or wrote it, with its generation: parsing a
        #: 255-member world costs far more than the call itself, so it is reused while no
        #: other process has written since.
        self._cached: tuple[int, World] | None = None
        #: This process's calls take turns here rather than in SQLite's busy handler, whose
        #: sleeps (up to 100 ms) would dominate concurrent activities.
        self._turn = threading.Lock()
        #: Bumped whenever the world this process holds may have changed.
        self._version = 0
        #: The last mesh health read: (version, simulated now, members) -> the health. Every
        #: member's verify reads the whole mesh (quadratic in the members); while nothing
        #: changed in between, the answer is the same.
        self._mesh_memo: (
            tuple[tuple[int, float, tuple[str, ...], str | None], MeshHealth] | None
        ) = None
        self._write_behind = write_behind
        self._stored_at = time.monotonic()
        self._unstored = False
        #: Write-behind: audit entries not stored yet (they are stored with the world).
        self._pending_audit: list[AuditEntry] = []

    # --- one transaction per access -------------------------------------------------------

    def _target(self, world: World, wall: float) -> float:
        """Simulated time at wall-clock ``wall``; infinity when operations are instant."""
        if world.time_scale <= 0:
            return math.inf
        return max(world.now, (wall - world.loaded_wall) / world.time_scale)

    def _read(self, connection: sqlite3.Connection) -> tuple[int, World | None]:
        """The stored world and its generation (the cached copy while it is current)."""
        generation = self._store.read_generation(connection)
        cached = self._cached
        if cached is not None and cached[0] == generation:
            return generation, cached[1]
        self._version += 1
        return generation, self._store.read_world(connection)

    def _begin(self, world: World, *, reads: bool) -> tuple[Simulation, bool, float]:
        """Advance ``world`` to now: the simulation, whether the access is quiet (a read
        with nothing due, which leaves the world as it was) and the clock before."""
        wall = self._clock()
        target = self._target(world, wall)
        quiet = reads and not event_queue.is_due(world.events, target)
        now = world.now
        sim = Simulation(world, wall)
        sim.advance(target)
        return sim, quiet, now

    def _loaded(self) -> tuple[int, World]:
        """The world from its file with its generation (the caller holds the turn)."""
        with self._store.connection() as connection:
            generation, world = self._read(connection)
        if world is None:
            raise self._not_loaded()
        return generation, world

    def _not_loaded(self) -> WorldNotLoadedError:
        return WorldNotLoadedError(
            f"no simulated fleet in {self.path.parent} (run 'meshfleet sim load FILE')"
        )

    def _in_memory(self, action: Callable[[Simulation], T], *, reads: bool = False) -> T:
        """One write-behind access to the world in memory (the caller holds the turn)."""
        if self._cached is None:
            self._cached = self._loaded()
        world = self._cached[1]
        sim, quiet, now = self._begin(world, reads=reads)
        try:
            # A failing action keeps what advancing applied, and what it did before failing.
            return action(sim)
        finally:
            if quiet and not sim.audit:
                world.now = now  # nothing happened: not even the clock moved
            else:
                self._version += 1
                self._unstored = True
                self._pending_audit += sim.audit

    def _transact(self, action: Callable[[Simulation], T], *, reads: bool = False) -> T:
        """One access. ``reads``: the action changes nothing, so when advancing has nothing
        to apply either, the stored world stays as it is (and is not written again)."""
        if self._write_behind is not None:
            with self._turn:
                try:
                    return self._in_memory(action, reads=reads)
                finally:
                    if not self._behind():
                        self._store_now()
        with self._turn:
            wrote = False
            refused: Exception | None = None
            try:
                with self._store.writing() as connection:
                    generation, world = self._read(connection)
                    if world is None:
                        raise self._not_loaded()
                    sim, quiet, now = self._begin(world, reads=reads)
                    try:
                        result = action(sim)
                    except Exception as error:
                        # A read that fails (an unknown operation, say) changed nothing; what
                        # advancing applied is kept, so the next access need not redo it.
                        if not (reads and isinstance(error, MeshfleetError)):
                            raise
                        refused = error
                    finally:
                        if quiet and not sim.audit:
                            # Nothing happened: keep the world exactly as stored (its clock too;
                            # the next access advances from the wall clock all the same).
                            world.now = now
                            self._cached = (generation, world)
                        else:
                            # Whatever the action did before failing is still what happened:
                            # transitions applied while advancing are facts, keep them.
                            self._version += 1
                            self._cached, wrote = None, True
                            written = self._store.write_world(connection, sim.world)
                            self._store.append_audit(connection, sim.audit)
                            self._cached = (written, sim.world)
            except BaseException:
                if wrote:
                    self._cached = None  # the write rolled back: the copy is ahead of it
                raise
        if refused is not None:
            raise refused
        return result

    def _behind(self) -> bool:
        """Write-behind: leave the document unstored for now (not too long)."""
        if self._write_behind is None:
            return False
        return time.monotonic() - self._stored_at < self._write_behind

    def flush(self) -> None:
        """Store the world and its audit entries now (write-behind only; else they always are)."""
        with self._turn:
            self._store_now()

    def _store_now(self) -> None:
        """Write-behind: store what is unstored (the caller holds the turn)."""
        self._stored_at = time.monotonic()
        if not (self._unstored or self._pending_audit) or self._cached is None:
            return
        with self._store.writing() as connection:
            generation, world = self._cached
            if self._unstored and self._store.read_generation(connection) == generation:
                # (Had someone else written, theirs would stand.)
                self._cached = (self._store.write_world(connection, world), world)
            self._store.append_audit(connection, self._pending_audit)
        self._pending_audit, self._unstored = [], False

    async def _run(self, action: Callable[[Simulation], T], *, reads: bool = False) -> T:
        if self._cached is not None and self._behind():
            # The world is in memory and nothing is due to be stored: no file, no thread.
            return self._transact(action, reads=reads)
        return await asyncio.to_thread(self._transact, action, reads=reads)

    # --- simulation-only API ------------------------------------------------------------

    def load(self, fleet: SimulatedFleet, *, reset: bool = False) -> None:
        """Make ``fleet`` the world (simTime 0 now). Without ``reset`` an existing world stays."""
        wall = self._clock()
        with self._turn, self._store.writing() as connection:
            self._cached = None
            if self._store.read_world(connection) is not None and not reset:
                raise WorldAlreadyLoadedError(
                    f"a simulated fleet is already loaded in {self.path.parent}; "
                    "use --reset to replace it"
                )
            self._store.clear(connection)
            sim = Simulation.load(fleet, wall)
            generation = self._store.write_world(connection, sim.world)
            self._store.append_audit(connection, sim.audit)
            self._cached = (generation, sim.world)
            self._version += 1
            self._pending_audit, self._unstored = [], False
            self._stored_at = time.monotonic()
        log.info("sim.loaded", fleet=fleet.metadata.name, clusters=len(fleet.spec.clusters))

    def exists(self) -> bool:
        """Whether a world has been loaded."""
        if not self.path.exists():
            return False
        with self._turn, self._store.connection() as connection:
            return self._store.read_world(connection) is not None

    def world(self) -> World:
        """The whole world, advanced to now (for ``sim show`` and tests)."""
        return self._transact(lambda sim: sim.world.model_copy(deep=True), reads=True)

    def sim_time(self) -> float:
        """Simulated seconds since the fleet was loaded."""
        return self._transact(lambda sim: sim.world.now, reads=True)

    def add_fault(self, cluster: str, fault: Fault) -> FaultRecord:
        """Inject a fault; it fires on its trigger (``on`` or ``atSimTime``)."""
        record = self._transact(lambda sim: sim.add_fault(cluster, fault))
        log.info("sim.fault_added", cluster=cluster, kind=fault.kind.value, id=record.id)
        return record

    def clear_faults(self, cluster: str | None = None, fault_id: int | None = None) -> list[int]:
        """Clear every fault, a cluster's, or one by id: their windows close, hangs resume."""
        return self._transact(lambda sim: sim.clear_faults(cluster, fault_id))

    def faults(self) -> list[FaultRecord]:
        """Every fault, declared or injected, with what is left of it."""
        return self._transact(lambda sim: [f.model_copy() for f in sim.world.faults], reads=True)

    def audit(
        self,
        *,
        after: int = 0,
        event: AuditEvent | None = None,
        cluster: str | None = None,
    ) -> list[AuditEntry]:
        """The audit log (after advancing to now), oldest first; ``after`` = a previous ``seq``."""
        self._transact(lambda sim: None, reads=True)
        if self._write_behind is not None:
            self.flush()  # the entries held in memory too
        with self._turn, self._store.connection() as connection:
            return self._store.read_audit(connection, after=after, event=event, cluster=cluster)

    def violations(self) -> list[ViolationRecord]:
        """Every continuity violation so far (``ended`` None while it lasts)."""
        return self._transact(
            lambda sim: [v.model_copy() for v in sim.world.violations], reads=True
        )

    # --- FleetBackend -----------------------------------------------------------------------

    async def describe_member(self, cluster: str) -> MemberDescription:
        return await self._run(lambda sim: sim.describe(cluster), reads=True)

    async def check_join_prerequisites(
        self, cluster: str, network: str, members: Sequence[str]
    ) -> JoinCheck:
        def check(sim: Simulation) -> JoinCheck:
            candidate = sim.describe(cluster)
            peers = [sim.describe(m) for m in members]
            return JoinCheck(
                cluster=cluster,
                network=network,
                failed=join_prerequisite_failures(candidate, network, peers),
            )

        return await self._run(check, reads=True)

    async def mesh_health(self, members: Sequence[str], *, focus: str | None = None) -> MeshHealth:
        wanted = tuple(members)

        def read(sim: Simulation) -> MeshHealth:
            key = (self._version, sim.world.now, wanted, focus)
            memo = self._mesh_memo
            if memo is not None and memo[0] == key:
                # The same world at the same simulated time: the same views (read-only).
                return memo[1].model_copy(update={"observed_at": sim.wall_at(sim.world.now)})
            health = sim.mesh_health(wanted, focus)
            self._mesh_memo = (key, health)
            return health

        return await self._run(read, reads=True)

    async def not_ready_links(
        self, members: Sequence[str], *, focus: str | None = None
    ) -> list[NotReadyLink]:
        wanted = list(members)
        return await self._run(lambda sim: sim.not_ready_links(wanted, focus), reads=True)

    async def enable_mesh(
        self,
        cluster: str,
        *,
        network: str,
        idempotency_key: str,
        cluster_id: int | None = None,
    ) -> OperationProgress:
        return await self._start(
            cluster, OperationKind.ENABLE_MESH, None, idempotency_key, network=network
        )

    async def target_problem(
        self, cluster: str, kubernetes_version: str, cilium_version: str
    ) -> str | None:
        """The simulator upgrades to any version, with or without a patch number."""
        return None

    async def disable_mesh(self, cluster: str, *, idempotency_key: str) -> None:
        def act(sim: Simulation) -> None:
            if sim.remembered(idempotency_key, "disableMesh", cluster) is None:
                sim.disable_mesh(cluster)
                sim.remember(idempotency_key, "disableMesh", cluster)

        await self._run(act)

    async def connect_peers(
        self, cluster: str, peers: Sequence[str], *, idempotency_key: str
    ) -> None:
        def act(sim: Simulation) -> None:
            if sim.remembered(idempotency_key, "connectPeers", cluster) is None:
                sim.connect(cluster, peers)
                sim.remember(idempotency_key, "connectPeers", cluster)

        await self._run(act)

    async def disconnect_peers(
        self, cluster: str, peers: Sequence[str], *, idempotency_key: str
    ) -> None:
        def act(sim: Simulation) -> None:
            if sim.remembered(idempotency_key, "disconnectPeers", cluster) is None:
                sim.disconnect(cluster, peers)
                sim.remember(idempotency_key, "disconnectPeers", cluster)

        await self._run(act)

    async def start_control_plane_upgrade(
        self, cluster: str, target_version: str, *, idempotency_key: str
    ) -> OperationProgress:
        return await self._start(
            cluster, OperationKind.CONTROL_PLANE_UPGRADE, target_version, idempotency_key
        )

    async def start_cilium_upgrade(
        self, cluster: str, target_version: str, *, idempotency_key: str
    ) -> OperationProgress:
        return await self._start(
            cluster, OperationKind.CILIUM_UPGRADE, target_version, idempotency_key
        )

    async def _start(
        self,
        cluster: str,
        kind: OperationKind,
        target_version: str | None,
        key: str,
        network: str | None = None,
    ) -> OperationProgress:
        def act(sim: Simulation) -> OperationProgress:
            op = sim.start_operation(key, cluster, kind, target_version, network)
            return sim.progress(op.key)

        progress = await self._run(act)
        log.info(
            "sim.operation_started",
            cluster=cluster,
            kind=kind.value,
            key=key,
            state=progress.state.value,
        )
        return progress

    async def get_operation(self, cluster: str, idempotency_key: str) -> OperationProgress:
        def read(sim: Simulation) -> OperationProgress:
            op = sim.world.operations.get(idempotency_key)
            if op is None or op.cluster != cluster:
                raise NotFoundError(f"no operation {idempotency_key!r} on cluster {cluster!r}")
            return sim.progress(idempotency_key)

        return await self._run(read, reads=True)

    async def list_global_services(self, members: Sequence[str]) -> list[GlobalService]:
        return await self._run(lambda sim: sim.global_services(members), reads=True)

    async def set_service_annotations(
        self,
        cluster: str,
        namespace: str,
        name: str,
        changes: Mapping[str, str | None],
        *,
        idempotency_key: str,
    ) -> AnnotationChange:
        return await self._annotate(cluster, namespace, name, changes, idempotency_key)

    async def set_namespace_annotations(
        self,
        cluster: str,
        namespace: str,
        changes: Mapping[str, str | None],
        *,
        idempotency_key: str,
    ) -> AnnotationChange:
        return await self._annotate(cluster, namespace, None, changes, idempotency_key)

    async def _annotate(
        self,
        cluster: str,
        namespace: str,
        name: str | None,
        changes: Mapping[str, str | None],
        key: str,
    ) -> AnnotationChange:
        kind = "setServiceAnnotations" if name is not None else "setNamespaceAnnotations"

        def act(sim: Simulation) -> AnnotationChange:
            known = sim.remembered(key, kind, cluster)
            if known is not None and known.result is not None:
                return AnnotationChange.model_validate(known.result)
            change = sim.set_annotations(cluster, namespace, name, changes, key)
            sim.remember(key, kind, cluster, change.model_dump(mode="json", by_alias=True))
            return change

        return await self._run(act)
