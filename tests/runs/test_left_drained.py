"""A member left drained is said loudly: in the run's status and error, and by the network.

A real run on the simulated fleet (real Temporal dev server, real worker): the
member's API goes away as its control-plane upgrade fails and stays away past
the restore timeout, so its restore cannot complete (as in
``test_drain_restore.py``). What the run and the network then say is read from
the run's status, the network's description and the rendered ``run status`` text.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from rich.console import Console
from temporalio.client import Client

from engine.domain.errors import MeshfleetError
from engine.domain.run import RunStatus, State
from engine.runtime.cli.run import render_status
from engine.runtime.client import MeshfleetClient
from tests.runs.harness import Cluster, strategy
from tests.runs.test_drain_restore import FAST, annotations, drain_fleet, service_in, start_run

ONE_STAGE = [{"name": "all", "groups": [{"name": "all"}]}]
#: The member's control plane fails, and its API is away past the restore timeout.
FAULTS = [
    {"kind": "fail", "on": "controlPlaneUpgrade", "message": "upgrade broke"},
    {"kind": "apiUnavailable", "on": "controlPlaneUpgrade"},
]
TIMINGS = FAST.model_copy(
    update={
        "control_plane_timeout": dt.timedelta(seconds=2),
        "restore_timeout": dt.timedelta(seconds=3),
    }
)


def _text(status: RunStatus) -> str:
    """What ``meshfleet run status`` prints for ``status``."""
    console = Console(width=300, record=True)
    console.print(render_status(status))
    return console.export_text()


async def test_a_member_left_drained_is_reported_by_the_run_and_listed_by_the_network(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """The run's status maps a-1 to its service, its error starts LEFT DRAINED naming both,
    ``run status`` prints it, and ``network show`` lists a-1 with the service and the run
    until an operator clears it (recorded with who and why)."""
    clusters = [Cluster("a-1", group="all", faults=FAULTS), Cluster("a-2", group="all")]
    async with drain_fleet(
        client, task_queue, state_dir, clusters, [service_in("a-1", "a-2")]
    ) as fleet:
        run = await start_run(fleet, strategy(ONE_STAGE), TIMINGS)
        status = await run.result()
        assert status.state is State.FAILED
        assert status.left_drained == {"a-1": ["shop/checkout"]}
        assert status.error is not None
        assert status.error.startswith("LEFT DRAINED")
        assert "a-1 (shop/checkout)" in status.error
        assert "LEFT DRAINED" in _text(status)
        assert annotations(fleet, "a-1")["service.cilium.io/shared"] == "false"

        meshfleet = MeshfleetClient(client, task_queue=task_queue)
        described = await meshfleet.describe_network(fleet.network)
        assert [(e.member, e.services, e.run_id) for e in described.left_drained] == [
            ("a-1", ["shop/checkout"], status.run_id)
        ]
        assert any(e.event == "leftDrained" and e.cluster == "a-1" for e in described.log)

        cleared = await meshfleet.clear_drained(
            fleet.network, "a-1", "restored by hand", identity="oncall@example"
        )
        assert cleared.left_drained == []
        entry = next(e for e in cleared.log if e.event == "drainedCleared")
        assert "oncall@example" in entry.message
        assert "restored by hand" in entry.message


async def test_a_later_run_that_drains_and_restores_the_member_clears_it_from_the_network(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """Its API is back: the next run drains and restores a-1 (the drain's record kept the
    annotations from before the first drain), so the network drops it and logs why."""
    clusters = [Cluster("a-1", group="all", faults=FAULTS), Cluster("a-2", group="all")]
    async with drain_fleet(
        client, task_queue, state_dir, clusters, [service_in("a-1", "a-2")]
    ) as fleet:
        first = await (await start_run(fleet, strategy(ONE_STAGE), TIMINGS)).result()
        assert first.left_drained == {"a-1": ["shop/checkout"]}
        meshfleet = MeshfleetClient(client, task_queue=task_queue)
        assert [e.member for e in (await meshfleet.describe_network(fleet.network)).left_drained]
        fleet.backend.clear_faults("a-1")

        second = await (await start_run(fleet, strategy(ONE_STAGE), TIMINGS)).result()
        assert second.state is State.COMPLETED, second.error
        assert second.left_drained == {}
        assert "service.cilium.io/shared" not in annotations(fleet, "a-1")
        described = await meshfleet.describe_network(fleet.network)
        assert described.left_drained == []
        restored = next(e for e in described.log if e.event == "drainedRestored")
        assert second.run_id in restored.message


async def test_clearing_a_member_not_listed_as_left_drained_is_refused(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """Nothing was left drained: clearing a-1 is refused naming the field, nothing is logged."""
    clusters = [Cluster("a-1", group="all"), Cluster("a-2", group="all")]
    async with drain_fleet(
        client, task_queue, state_dir, clusters, [service_in("a-1", "a-2")]
    ) as fleet:
        meshfleet = MeshfleetClient(client, task_queue=task_queue)
        with pytest.raises(MeshfleetError) as refused:
            await meshfleet.clear_drained(fleet.network, "a-1", "why not", identity="me")
        assert "member: 'a-1' is not listed as left drained" in str(refused.value)
        described = await meshfleet.describe_network(fleet.network)
        assert not any(e.event == "drainedCleared" for e in described.log)
