"""Activities of the auto-upgrade workflow: read the network, create (or find) the run.

Thin, like every activity: the decision (which target, whether anything is
behind) is made in the workflow by ``strategies.resolve_channel``. Starting
a run is the runtime's job (``engine.runtime.runs.start_update_run``, which
validates, snapshots the catalog and names the workflow); the worker hands
it in, because activities sit below the runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import structlog
from temporalio import activity
from temporalio.client import Client

from activities.common import classified
from engine.domain import search_attributes
from engine.domain.backend import FleetBackend
from engine.domain.errors import InvalidInputError
from engine.domain.network import QUERY_DESCRIBE, NetworkDescription, network_workflow_id
from engine.domain.run import run_workflow_id
from engine.domain.runspec import RunSpec
from engine.domain.schedule import (
    READ_AUTO_UPGRADE_FACTS,
    START_AUTO_UPGRADE_RUN,
    START_GATE_NAME,
    AutoUpgradeFacts,
    AutoUpgradeProfile,
    AutoUpgradeRunRef,
    MemberTarget,
    StartAutoUpgradeRun,
)
from strategies import load_catalog, with_start_gate

log = structlog.get_logger(__name__)


class RunStarter(Protocol):
    """Starts an update run on a task queue (``engine.runtime.runs.start_update_run``).

    Raises ``InvalidInputError`` with a ``name`` error when a run of that name exists.
    """

    async def __call__(self, client: Client, task_queue: str, spec: RunSpec) -> object: ...


def _already_exists(error: InvalidInputError) -> bool:
    return any(e.path == "name" and "already exists" in e.message for e in error.errors)


def run_spec(request: StartAutoUpgradeRun) -> RunSpec:
    """The run a profile creates: its strategy (with a start gate unless it starts) and window."""
    profile = request.profile
    strategy = profile.strategy
    if not profile.start_run:
        strategy = with_start_gate(strategy, START_GATE_NAME)
    # Runs carry the window: no member starts after its end; the run waits for the next opening.
    return RunSpec(
        name=request.run,
        network=profile.network,
        kubernetes_version=request.target,
        strategy=strategy,
        fleet_window=profile.window,
    )


class AutoUpgradeActivities:
    """The auto-upgrade activities, bound to the fleet backend, the client and a run starter."""

    def __init__(
        self,
        backend: FleetBackend,
        client: Client,
        start_run: RunStarter,
        *,
        catalog_file: Path | None = None,
    ) -> None:
        self._backend = backend
        self._client = client
        self._start_run = start_run
        self._catalog_file = catalog_file

    @activity.defn(name=READ_AUTO_UPGRADE_FACTS)
    async def read_auto_upgrade_facts(self, profile: AutoUpgradeProfile) -> AutoUpgradeFacts:
        """The network's members with their Kubernetes versions, and the release catalog."""
        async with classified():
            handle = self._client.get_workflow_handle(network_workflow_id(profile.network))
            described: NetworkDescription = await handle.query(
                QUERY_DESCRIBE, result_type=NetworkDescription
            )
            members = []
            for member in described.members:
                found = await self._backend.describe_member(member.name)
                members.append(
                    MemberTarget(name=found.name, kubernetes_version=found.kubernetes_version)
                )
            catalog = load_catalog(self._catalog_file)
            return AutoUpgradeFacts(members=members, catalog=catalog.to_json_dict())

    @activity.defn(name=START_AUTO_UPGRADE_RUN)
    async def start_auto_upgrade_run(self, request: StartAutoUpgradeRun) -> AutoUpgradeRunRef:
        """Create the run; when one of that name exists, return it (a trigger never duplicates)."""
        async with classified():
            network = request.profile.network
            try:
                await self._start_run(self._client, activity.info().task_queue, run_spec(request))
            except InvalidInputError as error:
                if not _already_exists(error):
                    raise
                described = await self._client.get_workflow_handle(
                    run_workflow_id(network, request.run)
                ).describe()
                state = described.typed_search_attributes.get(search_attributes.RUN_STATE)
                log.info("auto_upgrade.run_exists", network=network, run=request.run, state=state)
                return AutoUpgradeRunRef(
                    network=network, run=request.run, created=False, state=state
                )
            return AutoUpgradeRunRef(network=network, run=request.run, created=True)

    def all(self) -> Sequence[Callable[..., Any]]:
        """Every activity of this class, for the worker."""
        return [self.read_auto_upgrade_facts, self.start_auto_upgrade_run]
