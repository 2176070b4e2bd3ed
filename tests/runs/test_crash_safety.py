"""Workers die; runs do not: SIGKILLed workers, and replays of recorded histories."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities.backends.simulated import SimulatedFleetBackend
from engine.domain import run as contract
from engine.domain.fleet import parse_fleet
from engine.domain.run import State
from engine.domain.runspec import RunSpec
from engine.runtime import devserver
from engine.runtime.runs import start_update_run
from engine.runtime.worker import all_workflows, workflow_runner
from strategies import parse_strategy
from tests.runs.harness import (
    TIMINGS,
    Cluster,
    create_network,
    fleet_document,
    running_fleet,
    strategy,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def worker_process(
    address: str, task_queue: str, state_dir: Path
) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.runs.worker_process", address, task_queue, str(state_dir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        yield process
    finally:
        process.kill()
        process.wait()


async def wait_for_event(backend: SimulatedFleetBackend, event: str, cluster: str) -> None:
    for _ in range(1200):
        if any(e.event.value == event and e.cluster == cluster for e in backend.audit()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {event} on {cluster}")


async def test_sigkilled_workers_leave_every_control_plane_upgraded_exactly_once(
    client: Client, temporal_server: devserver.EmbeddedServer, task_queue: str, state_dir: Path
) -> None:
    clusters = [Cluster(f"crash-{i}", group="all") for i in range(1, 4)]
    backend = SimulatedFleetBackend(state_dir)
    # Slow enough (a control-plane upgrade takes 3 s) to kill a worker in the middle of one.
    backend.load(parse_fleet(fleet_document(clusters, time_scale=0.005)))
    timings = TIMINGS.model_copy(update={"heartbeat_timeout": dt.timedelta(seconds=2)})
    address = temporal_server.address
    with worker_process(address, task_queue, state_dir) as first:
        await create_network(client, task_queue, "crashes", [c.name for c in clusters])
        spec = RunSpec(
            network="crashes",
            kubernetes_version="1.33",
            strategy=parse_strategy(strategy([{"name": "all", "groups": [{"name": "all"}]}])),
        )
        run = await start_update_run(client, task_queue, spec, timings=timings)
        await wait_for_event(backend, "controlPlaneUpgradeStarted", "crash-1")
        first.kill()  # in the middle of crash-1's control-plane upgrade
    with worker_process(address, task_queue, state_dir) as second:
        await wait_for_event(backend, "ciliumUpgradeStarted", "crash-2")
        second.kill()  # in the middle of crash-2's Cilium upgrade
    with worker_process(address, task_queue, state_dir):
        status = await run.result()
    assert status.state is State.COMPLETED, status.error
    started = Counter(
        e.cluster for e in backend.audit() if e.event.value == "controlPlaneUpgradeStarted"
    )
    assert started == {"crash-1": 1, "crash-2": 1, "crash-3": 1}
    cilium = Counter(e.cluster for e in backend.audit() if e.event.value == "ciliumUpgradeStarted")
    assert cilium == {"crash-1": 1, "crash-2": 1, "crash-3": 1}


async def test_recorded_run_and_member_histories_replay_deterministically(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    clusters = [Cluster("replay-1", group="a"), Cluster("replay-2", group="b")]
    document = strategy(
        [
            {"name": "a", "groups": [{"name": "a"}], "afterStageWait": "1s"},
            {"name": "b", "beforeGates": [{"type": "Approval"}], "groups": [{"name": "b"}]},
        ]
    )
    async with running_fleet(client, task_queue, state_dir, clusters) as fleet:
        run = await fleet.start_run(document)
        await wait_until(run, lambda s: any(g.state.value == "Pending" for g in s.gates()))
        await run.approve("b/before/0")
        status = await run.result()
        assert status.state is State.COMPLETED
        ids = [run.workflow_id] + [
            contract.member_workflow_id(fleet.network, status.run_id, m.name)
            for _, _, m in status.members()
        ]
        histories = [await client.get_workflow_handle(i).fetch_history() for i in ids]
    replayer = Replayer(
        workflows=all_workflows(),
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    for history in histories:
        assert len(history.events) > 5
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{history.workflow_id}: {result.replay_failure}"
