"""Recorders of the Network and AutoUpgrade golden histories: run by hand, never collected.

    .venv/bin/python -m pytest tests/histories/record_network.py -k NAME -p no:cacheprovider

Like ``recorders.py`` (pytest collects this file only when it is named on the
command line). Each recorder drives a network into one state on today's code
and writes its history with ``record``; commit the JSON and its note on the
commit *before* the workflow change they guard.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, ScheduleActionExecutionStartWorkflow

from activities.backends.simulated import SimulatedFleetBackend
from activities.network import HolderActivities, NetworkActivities
from activities.run_steps import RunStepActivities
from engine.domain.fleet import Fault, FaultKind, FaultTrigger
from engine.domain.network import (
    UPDATE_ACQUIRE,
    NetworkDescription,
    NetworkStatus,
    network_workflow_id,
)
from engine.domain.network_requests import AcquireRequest
from engine.domain.schedule import Channel, TriggerStatus, schedule_id
from engine.runtime.client import MeshfleetClient
from engine.runtime.worker import build_worker
from tests.histories.record import record
from tests.network.conftest import POLL, SETTINGS, cluster, fleet, network_worker
from tests.network.holder import LeaseHolderWorkflow
from tests.network.test_bounded_history import InstantFleet
from tests.polling import eventually
from tests.schedules.test_schedules import fleet_at, site
from workflows.network import NetworkWorkflow


def _note(recorder: str, what: str) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return f"Recorded at {commit} by record_network.py::{recorder}.\n{what}"


def _name() -> str:
    return f"golden-{uuid.uuid4().hex[:8]}"


async def _count(client: Client, workflow_id: str, kind: EventType.ValueType) -> int:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return sum(1 for e in history.events if e.event_type == kind)


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    await eventually(check, timeout=30, what=what)


async def test_record_network_states(client: Client, task_queue: str, state_dir: Path) -> None:
    """Created empty; joined; queued behind a hold; a removal; a delete."""
    backend = SimulatedFleetBackend(state_dir)
    backend.load(
        fleet(
            [cluster(n, i) for i, n in enumerate(["a", "b", "c", "d", "e", "f"], start=1)],
            services=[{"namespace": "shop", "name": "cart", "clusters": {"d": 1, "e": 1}}],
        )
    )
    meshfleet = MeshfleetClient(client, task_queue=task_queue)
    recorder = "test_record_network_states"
    async with network_worker(client, task_queue, backend):
        empty = _name()
        await meshfleet.create_network(empty, settings=SETTINGS)
        await meshfleet.describe_network(empty)
        await record(
            client,
            network_workflow_id(empty),
            "Network",
            "created-empty",
            _note(recorder, "A network created with no members, idle."),
        )

        name = _name()
        workflow_id = network_workflow_id(name)
        await meshfleet.create_network(name, ["a", "b"], settings=SETTINGS)
        assert (await meshfleet.describe_network(name)).status is NetworkStatus.CONNECTED
        await record(
            client,
            workflow_id,
            "Network",
            "joined",
            _note(recorder, "A network created with a and b joined: Connected, idle."),
        )

        handle = client.get_workflow_handle(workflow_id)
        await handle.execute_update(
            UPDATE_ACQUIRE, AcquireRequest(run_id="run-1"), result_type=NetworkDescription
        )
        assert (await meshfleet.join(name, ["c"])).queued
        await record(
            client,
            workflow_id,
            "Network",
            "queued-behind-a-hold",
            _note(
                recorder,
                "Then update run 'run-1' acquired it (an AcquireRequest without holder "
                "execution ids, as runs sent before the lease) and a join of c was queued "
                "behind the hold; still held.",
            ),
        )

        await meshfleet.delete_network(empty)
        await client.get_workflow_handle(network_workflow_id(empty)).result()
        await record(
            client,
            network_workflow_id(empty),
            "Network",
            "deleted-empty",
            _note(recorder, "The empty network deleted (its workflow completed)."),
        )
        await handle.terminate("recorded")

        removal = _name()
        await meshfleet.create_network(removal, ["d", "e", "f"], settings=SETTINGS)
        removed = await meshfleet.remove(removal, ["d"])
        assert [m.outcome.value for m in removed.members] == ["removed"]
        await record(
            client,
            network_workflow_id(removal),
            "Network",
            "removal",
            _note(
                recorder,
                "d, e, f joined; d (serving a global service) removed: drained, "
                "disconnected, unlisted, disabled, restored.",
            ),
        )
        deleted = await meshfleet.delete_network(removal, force=True)
        assert deleted.deleted
        await client.get_workflow_handle(network_workflow_id(removal)).result()
        await record(
            client,
            network_workflow_id(removal),
            "Network",
            "deleted-with-force",
            _note(recorder, "Then deleted with force: e and f removed, the workflow completed."),
        )


async def test_record_a_degraded_idle_network(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """Degraded and idle: the re-check timer fired twice on a mesh still partitioned."""
    backend = SimulatedFleetBackend(state_dir)
    backend.load(fleet([cluster("a", 1), cluster("b", 2), cluster("cut", 3)]))
    meshfleet = MeshfleetClient(client, task_queue=task_queue)
    settings = SETTINGS.model_copy(
        update={
            "mesh_ready_timeout": SETTINGS.heartbeat_timeout,
            "degraded_recheck_interval": dt.timedelta(seconds=1),
        }
    )
    name = _name()
    workflow_id = network_workflow_id(name)
    async with network_worker(client, task_queue, backend):
        await meshfleet.create_network(name, ["a", "b"], settings=settings)
        backend.add_fault("cut", Fault(kind=FaultKind.MESH_PARTITION, on=FaultTrigger.JOIN))
        assert (await meshfleet.join(name, ["cut"])).status is NetworkStatus.DEGRADED

        async def rechecked_twice() -> bool:
            fired = EventType.EVENT_TYPE_TIMER_FIRED
            return await _count(client, workflow_id, fired) >= 2

        await _until(rechecked_twice, "two re-checks of the degraded mesh")
        assert (await meshfleet.describe_network(name)).status is NetworkStatus.DEGRADED
        await record(
            client,
            workflow_id,
            "Network",
            "degraded-idle",
            _note(
                "test_record_a_degraded_idle_network",
                "a and b joined, cut joined behind a meshPartition fault: Degraded, idle; "
                "the 1s re-check timer fired at least twice on a mesh still partitioned.",
            ),
        )
        await client.get_workflow_handle(workflow_id).terminate("recorded")


async def test_record_an_auto_upgrade_trigger(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """A schedule's trigger: one AutoUpgrade workflow that created a run (not started)."""
    async with site(client, task_queue, state_dir, fleet_at("1.32.6", "1.17.9")) as here:
        profile = here.profile(Channel.TARGET_KUBERNETES_VERSION, "1.33", startRun=False)
        await here.client.create_schedule(profile)
        status = await here.client.trigger_schedule(profile.name)
        assert status.last_trigger_status is TriggerStatus.SUCCEEDED, status.last_trigger_error
        described = await client.get_schedule_handle(schedule_id(profile.name)).describe()
        action = described.info.recent_actions[-1].action
        assert isinstance(action, ScheduleActionExecutionStartWorkflow)
        await record(
            client,
            action.workflow_id,
            "AutoUpgrade",
            "created-a-run",
            _note(
                "test_record_an_auto_upgrade_trigger",
                "A TargetKubernetesVersion 1.33 profile (startRun false) triggered on a "
                "network one minor behind: the trigger created one run, waiting at its start.",
            ),
        )


async def test_record_a_lease_that_ended_with_its_holder(
    client: Client, task_queue: str, state_dir: Path
) -> None:
    """A stand-in run holds the network (its acquire names its execution), a removal
    queues behind it, the run is terminated: the hold ends with it and the removal runs."""
    backend = SimulatedFleetBackend(state_dir)
    backend.load(fleet([cluster("a", 1), cluster("b", 2)]))
    meshfleet = MeshfleetClient(client, task_queue=task_queue)
    update = RunStepActivities(backend, client)
    name = _name()
    async with build_worker(
        client,
        task_queue,
        workflows=[NetworkWorkflow, LeaseHolderWorkflow],
        activities=[
            *NetworkActivities(backend, poll_interval=POLL).all(),
            *HolderActivities(client).all(),
            update.acquire_network,
        ],
    ):
        await meshfleet.create_network(name, ["a", "b"], settings=SETTINGS)
        holder = await client.start_workflow(
            LeaseHolderWorkflow.run,
            args=[name, "r1"],
            id=f"updaterun/{name}/r1",
            task_queue=task_queue,
        )

        async def held() -> bool:
            return (await meshfleet.describe_network(name)).holder == "r1"

        await _until(held, "the stand-in run to hold the network")
        assert (await meshfleet.remove(name, ["b"])).queued
        await holder.terminate("recorded")

        async def freed() -> bool:
            described = await meshfleet.describe_network(name)
            return described.holder is None and not described.pending and described.current is None

        await _until(freed, "the hold to end and the removal to run")
        await record(
            client,
            network_workflow_id(name),
            "Network",
            "lease-ended-with-its-holder",
            _note(
                "test_record_a_lease_that_ended_with_its_holder",
                "a and b joined; update run r1 acquired with its execution named (watched); "
                "a removal of b queued; r1 terminated: leaseEnded, the removal ran.",
            ),
        )
        await client.get_workflow_handle(network_workflow_id(name)).terminate("recorded")


async def test_record_a_run_that_handed_callers_over(client: Client, task_queue: str) -> None:
    """Under constant load (8 callers), a run of the chain that reached its bound, handed
    its waiting callers over and continued as new."""
    meshfleet = MeshfleetClient(client, task_queue=task_queue)
    name = _name()
    workflow_id = network_workflow_id(name)
    async with build_worker(
        client,
        task_queue,
        workflows=[NetworkWorkflow],
        activities=[*InstantFleet().all(), *HolderActivities(client).all()],
    ):
        settings = SETTINGS.model_copy(update={"continue_as_new_after": 200})
        await meshfleet.create_network(name, ["base-1"], settings=settings)
        first = (await client.get_workflow_handle(workflow_id).describe()).run_id
        slots = asyncio.Semaphore(8)

        async def join_then_remove(index: int) -> None:
            async with slots:
                await meshfleet.join(name, [f"m-{index}"])
                await meshfleet.remove(name, [f"m-{index}"])

        await asyncio.gather(*(join_then_remove(i) for i in range(20)))
        first_history = await client.get_workflow_handle(workflow_id, run_id=first).fetch_history()
        assert any(
            e.HasField("workflow_execution_continued_as_new_event_attributes")
            for e in first_history.events
        )
        await record(
            client,
            workflow_id,
            "Network",
            "continued-as-new-handing-callers-over",
            _note(
                "test_record_a_run_that_handed_callers_over",
                "The first run of a network under 8 concurrent join/remove callers with a "
                "continue-as-new bound of 200 events: it stopped starting operations, answered "
                "its waiting callers 'continued' and continued as new.",
            ),
            run_id=first,
        )
        await client.get_workflow_handle(workflow_id).terminate("recorded")
