"""The Python client: everything the CLI can do, for programs.

```python
from engine.runtime.client import MeshfleetClient

client = await MeshfleetClient.connect()            # embedded server unless TEMPORAL_ADDRESS is set
await client.create_network("prod-mesh", members=["eu-west-1", "eu-west-2"])
```

Methods validate their input before anything reaches Temporal and raise
``engine.domain.errors`` exceptions (``InvalidInputError``, ``NotFoundError``,
``UnavailableError``) with messages meant for a person. The client is the one
entry point; the work is done in ``networks.py``, ``runs.py`` and
``schedules.py``, one module per kind of thing it drives. It never exits the
process: it raises or returns (``run_script`` in ``process.py`` is for scripts).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from temporalio.client import Client

from engine.domain.network import (
    DeleteResult,
    JoinResult,
    NetworkDescription,
    NetworkSettings,
    NetworkSummary,
    RemoveResult,
)
from engine.domain.run import RunTimings, State
from engine.domain.runspec import RunSpec
from engine.domain.schedule import AutoUpgradeProfile, ProfileStatus
from engine.domain.services import ServicesReport
from engine.runtime import networks, runs, schedules
from engine.runtime.connection import Connection, ConnectionSettings, connect
from engine.runtime.networks import default_network_settings
from engine.runtime.process import run_script
from engine.runtime.runs import UpdateRunHandle
from engine.runtime.settings import task_queue as default_task_queue

__all__ = ["MeshfleetClient", "UpdateRunHandle", "default_network_settings", "run_script"]


class MeshfleetClient:
    """A connection to Temporal plus meshfleet's operations on networks and update runs."""

    def __init__(
        self,
        temporal: Client,
        *,
        task_queue: str | None = None,
        connection: Connection | None = None,
    ) -> None:
        self.temporal = temporal
        self.task_queue = task_queue or default_task_queue()
        self._connection = connection

    @classmethod
    async def connect(
        cls,
        address: str | None = None,
        namespace: str | None = None,
        *,
        task_queue: str | None = None,
        state_dir: Path | None = None,
    ) -> MeshfleetClient:
        """Connect the standard Temporal way (flags, then environment, then profile)."""
        connection = await connect(
            ConnectionSettings.resolve(address, namespace), state_dir=state_dir
        )
        return cls(connection.client, task_queue=task_queue, connection=connection)

    @property
    def ui_url(self) -> str | None:
        """The Web UI's base address, when known."""
        return self._connection.ui_url if self._connection else None

    def close(self) -> None:
        """Stop the embedded server if this client started it."""
        if self._connection is not None:
            self._connection.close()

    # --- networks (engine/runtime/networks.py) ---

    async def create_network(
        self,
        name: str,
        members: Sequence[str] = (),
        *,
        settings: NetworkSettings | None = None,
    ) -> JoinResult | None:
        """Start the network's workflow and join ``members`` through the same join path.

        Returns the initial join's result (None when created empty). Raises
        :class:`NetworkExistsError` when a network of that name is running.
        """
        return await networks.create_network(
            self.temporal, self.task_queue, name, members, settings=settings
        )

    async def join(self, name: str, members: Sequence[str]) -> JoinResult:
        """Join clusters; per member: joined, rejected (with the rule), failed, or queued."""
        return await networks.join_members(self.temporal, name, members)

    async def remove(self, name: str, members: Sequence[str]) -> RemoveResult:
        """Remove members (drained first, then disconnected); queued while a run holds it."""
        return await networks.remove_members(self.temporal, name, members)

    async def delete_network(self, name: str, *, force: bool = False) -> DeleteResult:
        """Delete an empty network (or, with ``force``, remove every member first)."""
        return await networks.delete_network(self.temporal, name, force=force)

    async def describe_network(self, name: str) -> NetworkDescription:
        """Members, ids, status, holder, pending operations and the recent log."""
        return await networks.describe_network(self.temporal, name)

    async def list_networks(self) -> list[NetworkSummary]:
        """Every running network, found by its search attribute, with its status."""
        return await networks.list_networks(self.temporal)

    async def network_services(self, name: str) -> ServicesReport:
        """Every global service of the members, with endpoints per cluster and flagged mistakes."""
        return await networks.network_services(self.temporal, name)

    async def release_network(
        self, name: str, reason: str, *, identity: str | None = None
    ) -> NetworkDescription:
        """Free a network whose holding update run is gone (refused while that run runs).

        The escape hatch for holds that no execution watches (taken by earlier
        code) or whose run cannot release; recorded in the network's log with
        ``identity`` (``user@host`` by default) and ``reason``.
        """
        return await networks.release_network(self.temporal, name, reason, identity=identity)

    async def clear_drained(
        self, name: str, member: str, reason: str, *, identity: str | None = None
    ) -> NetworkDescription:
        """Clear ``member`` from the network's left-drained list (recorded with who and why).

        For an operator who restored the member's annotations by hand (or knows it
        is gone); refused when the member is not listed.
        """
        return await networks.clear_drained(self.temporal, name, member, reason, identity=identity)

    # --- update runs ---

    async def start_update_run(
        self,
        spec: RunSpec,
        *,
        timings: RunTimings | None = None,
        catalog_file: Path | None = None,
    ) -> UpdateRunHandle:
        """Start a run (the strategy and release catalog are snapshotted into it)."""
        return await runs.start_update_run(
            self.temporal, self.task_queue, spec, timings=timings, catalog_file=catalog_file
        )

    async def get_update_run(self, run: str, network: str | None = None) -> UpdateRunHandle:
        """A run by ``network/run``, or by name (with ``network`` or when unique)."""
        return await runs.find_run(self.temporal, run, network)

    async def list_runs(
        self, network: str | None = None, state: State | None = None
    ) -> list[runs.RunSummary]:
        """Runs, newest first, through the search attributes the Web UI uses too."""
        return await runs.list_runs(self.temporal, network, state)

    # --- schedules (auto-upgrade profiles; engine/runtime/schedules.py) ---

    async def create_schedule(self, profile: AutoUpgradeProfile) -> ProfileStatus:
        """Create the profile's Temporal Schedule (``autoupgrade/<name>``)."""
        return await schedules.create_profile(self.temporal, self.task_queue, profile)

    async def list_schedules(self) -> list[ProfileStatus]:
        """Every profile with its next action times and last trigger."""
        return await schedules.list_profiles(self.temporal)

    async def show_schedule(self, name: str) -> ProfileStatus:
        """One profile: its schedule's state, next action times and last trigger."""
        return await schedules.describe_profile(self.temporal, name)

    async def pause_schedule(self, name: str, note: str | None = None) -> ProfileStatus:
        """Stop the schedule from firing until unpaused."""
        return await schedules.pause_profile(self.temporal, name, note)

    async def unpause_schedule(self, name: str, note: str | None = None) -> ProfileStatus:
        """Let the schedule fire again at the next opening."""
        return await schedules.unpause_profile(self.temporal, name, note)

    async def trigger_schedule(self, name: str) -> ProfileStatus:
        """Fire the schedule now and return the status once that trigger has finished."""
        return await schedules.trigger_profile(self.temporal, name)

    async def delete_schedule(self, name: str) -> None:
        """Delete the schedule (runs it created are not touched)."""
        await schedules.delete_profile(self.temporal, name)
