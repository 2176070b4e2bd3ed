"""How much does meshfleet cost on top of Temporal? An update run against its floor.

    .venv/bin/python benchmarks/update_run.py [--members 255] [--stages 5] [--time-scale 0]
                                              [--networks K] [--repeat N]

In one process, on one embedded Temporal server of its own (free ports, a
throw-away state directory, stopped at the end), this runs:

- the run: a staged update run of a simulated fleet of ``--members`` clusters
  (one network of them, joined before the run starts; ``--networks K`` runs K such networks at
  once, each with its own fleet and worker), ``--stages`` stages chained one
  after the other, every member of a stage in flight at once, with
  instantaneous operations at ``--time-scale 0``;
- the floor: the same shape with no-op bodies, defined in ``floor_workflows.py``. A parent
  workflow runs the run's own activities at the same places (acquire, read
  the members, the endpoint baseline; per stage a health gate before and two
  after; the release) and, per stage, one child workflow per member, each
  running as many no-op activities as a member update does.

``--repeat N`` measures N rounds of floor then run on the same server (each
round with fresh networks): a 2-core machine's noise moves one round's ratio
by about 0.1, and the median of a few rounds says more than any one of them.

It prints one JSON object: ``members``, ``stages``, ``wallSeconds``,
``floorSeconds``, ``ratio`` (wall / floor; with ``--repeat``, the medians,
and ``ratios``, each round's own), ``stageTransitionLatencyMedianSeconds``
(the last member of a stage finishing -> the first member of the next
starting, gates and soaks excluded: the window is taken from the run's own
status times, and the time the run spent in its gates is taken out of it),
``stageTransitionWithGatesMedianSeconds`` (the same windows, gates included),
``maxHistoryEvents`` (the largest history among the run and its members),
``workerPeakRssMb`` (this process's peak resident memory: worker, client and
simulated fleet together), plus ``networks`` and ``activities`` (activity
tasks of the run and of the floor, counted from their histories: they must be
equal).

The gates are read from the run's history: each health gate (the mesh before
and after a stage, the endpoints after it, the soak's checks) from its
activity's scheduled event to its closing event, and each soak or
ScheduledStart wait from its timer's start to its firing or cancellation.
Approval gates wait on no timer and are not taken out; the benchmark's
strategy has none.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import resource
import signal
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from floor_workflows import FloorInput, FloorMemberWorkflow, FloorRunWorkflow, floor_noop

if TYPE_CHECKING:
    from temporalio.client import Client

    from activities.backends.simulated import SimulatedFleetBackend
    from engine.domain.run import RunStatus

#: Timings of the run: poll quickly; close the run as soon as it ends.
#: The run polls quickly and closes as soon as it ends (its result is then its final status).
POLL_INTERVAL = timedelta(milliseconds=100)
LINGER = timedelta(milliseconds=1)
#: Three global services, each served by about five clusters spread over the stages.
SERVICES = 3
HOLDERS = 5


# --- inputs ---------------------------------------------------------------------------------


def member_names(count: int) -> list[str]:
    return [f"m-{index:03d}" for index in range(count)]


def stage_split(names: list[str], stages: int) -> list[list[str]]:
    """Members split into ``stages`` consecutive, nearly equal parts."""
    size, extra = divmod(len(names), stages)
    parts, start = [], 0
    for index in range(stages):
        end = start + size + (1 if index < extra else 0)
        parts.append(names[start:end])
        start = end
    return parts


def service_holders(names: list[str]) -> list[list[str]]:
    """The members serving each global service: about ``HOLDERS`` each."""
    return [names[k :: max(1, len(names) // HOLDERS)] for k in range(SERVICES)]


def fleet_document(network: str, names: list[str], stages: int, time_scale: float) -> object:
    """A pre-joined network of ``names``; three global services, each on about five of them."""
    stage_of = {n: i for i, part in enumerate(stage_split(names, stages)) for n in part}
    return {
        "apiVersion": "meshfleet.io/v1alpha1",
        "kind": "SimulatedFleet",
        "metadata": {"name": "bench"},
        "spec": {
            "timeScale": time_scale,
            "clusters": [
                {
                    "name": name,
                    "labels": {"stage": f"s{stage_of[name]}"},
                    "kubernetesVersion": "1.32.6",
                    "ciliumVersion": "1.17.9",
                    "clusterId": index + 1,
                    "podCIDRs": [f"10.{index // 256}.{index % 256}.0/24"],
                }
                for index, name in enumerate(names)
            ],
            "networks": [{"name": network, "members": names}],
            "globalServices": [
                {
                    "namespace": "shop",
                    "name": f"svc-{k}",
                    "clusters": dict.fromkeys(holders, 2),
                    "minReadyEndpoints": 1,
                }
                for k, holders in enumerate(service_holders(names))
            ],
        },
    }


def strategy_document(stages: int) -> dict[str, Any]:
    return {
        "apiVersion": "meshfleet.io/v1alpha1",
        "kind": "UpdateStrategy",
        "metadata": {"name": "bench"},
        "spec": {
            "stages": [
                {
                    "name": f"s{index}",
                    "maxConcurrency": "100%",
                    "groups": [
                        {
                            "name": f"g{index}",
                            "selector": f"stage=s{index}",
                            "maxConcurrency": "100%",
                        }
                    ],
                }
                for index in range(stages)
            ],
            "health": {"meshReadyTimeout": "5m", "minReadyEndpoints": 0},
        },
    }


# --- measuring ------------------------------------------------------------------------------


async def history_stats(client: Client, workflow_ids: list[str]) -> tuple[int, int]:
    """(largest history, activity tasks scheduled) over these workflows."""
    limit = asyncio.Semaphore(16)

    async def one(workflow_id: str) -> tuple[int, int]:
        async with limit:
            history = await client.get_workflow_handle(workflow_id).fetch_history()
        scheduled = sum(
            1 for e in history.events if e.HasField("activity_task_scheduled_event_attributes")
        )
        return len(history.events), scheduled

    found = await asyncio.gather(*(one(i) for i in workflow_ids))
    return max(n for n, _ in found), sum(a for _, a in found)


Interval = tuple[dt.datetime, dt.datetime]

#: Timers of the run that belong to a gate: their summaries start so (workflows/update_run.py).
GATE_TIMER_SUMMARIES = ("soak after stage ", "gate ")


async def gate_intervals(client: Client, workflow_id: str) -> list[Interval]:
    """When the run was in a gate or a soak, from its history: merged, in order.

    A gate activity counts from its scheduled event to its closing one (all its
    attempts); a soak or ScheduledStart timer from its start to its firing or
    cancellation.
    """
    from engine.domain.run import CHECK_MESH_HEALTH, SERVICE_ENDPOINTS

    gates = {CHECK_MESH_HEALTH, SERVICE_ENDPOINTS}
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    converter = client.data_converter.payload_converter
    opened: dict[int, dt.datetime] = {}
    found: list[Interval] = []
    for event in history.events:
        at = event.event_time.ToDatetime(tzinfo=dt.UTC)
        if event.HasField("activity_task_scheduled_event_attributes"):
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            if name in gates:
                opened[event.event_id] = at
        elif event.HasField("timer_started_event_attributes"):
            summary = event.user_metadata.summary
            text = converter.from_payload(summary, str) if summary.data else ""
            if text.startswith(GATE_TIMER_SUMMARIES):
                opened[event.event_id] = at
        else:
            opening = _opening_event(event)
            if opening in opened:
                found.append((opened.pop(opening), at))
    return merge(found)


def _opening_event(event: Any) -> int | None:
    """The id of the event that scheduled the activity or started the timer ``event`` closes."""
    for field in (
        "activity_task_completed_event_attributes",
        "activity_task_failed_event_attributes",
        "activity_task_timed_out_event_attributes",
        "activity_task_canceled_event_attributes",
    ):
        if event.HasField(field):
            return int(getattr(event, field).scheduled_event_id)
    for field in ("timer_fired_event_attributes", "timer_canceled_event_attributes"):
        if event.HasField(field):
            return int(getattr(event, field).started_event_id)
    return None


def merge(intervals: list[Interval]) -> list[Interval]:
    """Overlapping intervals joined, in order."""
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def transition_latencies(status: RunStatus, excluded: list[Interval] | None = None) -> list[float]:
    """Per consecutive stage pair: last member done -> first member of the next started.

    ``excluded`` (merged, as ``gate_intervals`` returns them): time taken out of each window.
    """
    found = []
    for before, after in zip(status.stages, status.stages[1:], strict=False):
        ended = [m.completed_time for g in before.groups for m in g.members if m.completed_time]
        started = [m.start_time for g in after.groups for m in g.members if m.start_time]
        if ended and started:
            start, end = max(ended), min(started)
            seconds = (end - start).total_seconds()
            for low, high in excluded or []:
                overlap = (min(end, high) - max(start, low)).total_seconds()
                seconds -= max(overlap, 0.0)
            found.append(seconds)
    return found


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


@dataclass
class Network:
    name: str
    members: list[str]
    queue: str
    backend: SimulatedFleetBackend


async def prepare_network(
    client: Client, state: Path, index: int, members: int, stages: int, time_scale: float
) -> Network:
    from activities.backends.simulated import SimulatedFleetBackend
    from engine.domain.fleet import parse_fleet

    name = f"bench-{index}"
    names = member_names(members)
    # The world is private to this process: store it at most once a second.
    backend = SimulatedFleetBackend(state / f"fleet-{index}", write_behind=1.0)
    fleet = parse_fleet(fleet_document(name, names, stages, time_scale))
    await asyncio.to_thread(backend.load, fleet, reset=True)
    return Network(name, names, f"bench-{index}-{uuid.uuid4().hex[:6]}", backend)


async def adopt_network(client: Client, network: Network) -> None:
    """Start the network's workflow already holding the members the fleet file joined.

    The run is what is measured, not 255 joins: the workflow starts with the
    state continue-as-new would carry for a connected network of these members.
    """
    from engine.domain.network import (
        NETWORK_WORKFLOW,
        QUERY_DESCRIBE,
        NetworkDescription,
        NetworkInput,
        NetworkMember,
        NetworkState,
        NetworkStatus,
        network_workflow_id,
    )

    now = dt.datetime.now(dt.UTC)
    state = NetworkState(
        name=network.name,
        uid=uuid.uuid4().hex,
        created_at=now,
        status=NetworkStatus.CONNECTED,
        members=[
            NetworkMember(name=name, cluster_id=index + 1, joined_at=now, operation="op-1")
            for index, name in enumerate(network.members)
        ],
    )
    handle = await client.start_workflow(
        NETWORK_WORKFLOW,
        NetworkInput(name=network.name, state=state),
        id=network_workflow_id(network.name),
        task_queue=network.queue,
    )
    await handle.query(QUERY_DESCRIBE, result_type=NetworkDescription)


async def run_update(client: Client, network: Network, stages: int) -> tuple[RunStatus, float]:
    from engine.domain.run import RunStatus, RunTimings
    from engine.domain.runspec import RunSpec
    from engine.runtime.client import MeshfleetClient
    from strategies import parse_strategy

    meshfleet = MeshfleetClient(client, task_queue=network.queue)
    await adopt_network(client, network)
    spec = RunSpec(
        name="bench",
        network=network.name,
        kubernetes_version="1.33",
        strategy=parse_strategy(strategy_document(stages)),
    )
    started = time.perf_counter()
    handle = await meshfleet.start_update_run(
        spec, timings=RunTimings(poll_interval=POLL_INTERVAL, linger=LINGER)
    )
    # The run closes right after it ends (linger 1 ms): its result is its final status.
    final: RunStatus = await client.get_workflow_handle(
        handle.workflow_id, result_type=RunStatus
    ).result()
    return final, time.perf_counter() - started


async def run_floor(client: Client, queue: str, members: int, stages: int) -> tuple[float, str]:
    prefix = f"floor/{uuid.uuid4().hex[:8]}"
    names = member_names(members)
    serving = sorted({n for holders in service_holders(names) for n in holders})
    request = FloorInput(stages=stage_split(names, stages), prefix=prefix, serving=serving)
    started = time.perf_counter()
    await client.execute_workflow(FloorRunWorkflow.run, request, id=prefix, task_queue=queue)
    return time.perf_counter() - started, prefix


@dataclass
class Round:
    """One floor and one run (of ``networks`` networks each), measured."""

    wall: float
    floor: float
    statuses: list[RunStatus]
    latencies: list[float]
    with_gates: list[float]
    max_events: int
    activities: tuple[int, int]


async def measure_round(
    client: Client,
    state: Path,
    first: int,
    members: int,
    stages: int,
    time_scale: float,
    networks: int,
) -> Round:
    """The floor, then the run, of networks ``first .. first + networks - 1``."""
    from temporalio.worker import Worker

    from engine.domain.run import member_workflow_id, run_workflow_id
    from engine.runtime.worker import build_worker, workflow_runner

    fleets = [
        await prepare_network(client, state, first + i, members, stages, time_scale)
        for i in range(networks)
    ]
    floor_queue = f"floor-{uuid.uuid4().hex[:6]}"
    floor_worker = Worker(
        client,
        task_queue=floor_queue,
        workflows=[FloorRunWorkflow, FloorMemberWorkflow],
        activities=[floor_noop],
        workflow_runner=workflow_runner(),
    )
    async with floor_worker:
        floors = await asyncio.gather(
            *(run_floor(client, floor_queue, members, stages) for _ in range(networks))
        )
    workers = [build_worker(client, n.queue, backend=n.backend) for n in fleets]
    for worker in workers:
        await worker.__aenter__()
    try:
        results = await asyncio.gather(*(run_update(client, n, stages) for n in fleets))
    finally:
        for worker in workers:
            await worker.__aexit__(None, None, None)
    statuses = [status for status, _ in results]
    ids = []
    for status in statuses:
        ids.append(run_workflow_id(status.network, status.run_id))
        ids += [
            member_workflow_id(status.network, status.run_id, m.name)
            for _, _, m in status.members()
            if m.attempts > 0
        ]
    max_events, run_activities = await history_stats(client, ids)
    floor_ids = [prefix for _, prefix in floors] + [
        f"{prefix}/member/{name}" for _, prefix in floors for name in member_names(members)
    ]
    _, floor_activities = await history_stats(client, floor_ids)
    gates = await asyncio.gather(
        *(gate_intervals(client, run_workflow_id(s.network, s.run_id)) for s in statuses)
    )
    return Round(
        wall=max(seconds for _, seconds in results),
        floor=max(seconds for seconds, _ in floors),
        statuses=statuses,
        latencies=[
            lat
            for status, excluded in zip(statuses, gates, strict=True)
            for lat in transition_latencies(status, excluded)
        ],
        with_gates=[lat for status in statuses for lat in transition_latencies(status)],
        max_events=max_events,
        activities=(run_activities, floor_activities),
    )


async def benchmark(
    members: int,
    stages: int,
    time_scale: float,
    networks: int,
    status_file: Path | None = None,
    repeat: int = 1,
) -> dict[str, Any]:
    from engine.domain.run import State
    from engine.runtime import devserver
    from engine.runtime.connection import ConnectionSettings, connect_client

    with tempfile.TemporaryDirectory(prefix="meshfleet-bench-") as tmp:
        state = Path(tmp)
        server = await devserver.start_embedded_server(
            state / "temporal", grpc_port=None, ui_port=None, ui=False
        )
        try:
            client = await connect_client(
                server.address, ConnectionSettings(address=server.address)
            )
            rounds = []
            for index in range(repeat):
                rounds.append(
                    await measure_round(
                        client, state, index * networks, members, stages, time_scale, networks
                    )
                )
        finally:
            server.stop()
    statuses = [s for r in rounds for s in r.statuses]
    if status_file is not None:
        text = json.dumps([s.to_json_dict() for s in statuses], indent=1)
        await asyncio.to_thread(status_file.write_text, text)
    not_done = [
        f"{s.network}: {s.state.value} ({s.error or 'no error'})"
        for s in statuses
        if s.state is not State.COMPLETED
    ]
    ratios = [round(r.wall / r.floor, 3) for r in rounds]
    return {
        #: Completed, or what kept a run from completing (then the exit code is 1).
        "runState": "; ".join(not_done) or State.COMPLETED.value,
        "members": members,
        "stages": stages,
        "networks": networks,
        "wallSeconds": median([r.wall for r in rounds]),
        "floorSeconds": median([r.floor for r in rounds]),
        #: The median over the rounds of each round's own wall / floor.
        "ratio": median(ratios),
        "ratios": ratios,
        "stageTransitionLatencyMedianSeconds": median([x for r in rounds for x in r.latencies]),
        "stageTransitionWithGatesMedianSeconds": median([x for r in rounds for x in r.with_gates]),
        "maxHistoryEvents": max(r.max_events for r in rounds),
        "workerPeakRssMb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "activities": {
            "run": sum(r.activities[0] for r in rounds),
            "floor": sum(r.activities[1] for r in rounds),
        },
        "measuredAt": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=255, help="members per network (<= 255)")
    parser.add_argument("--stages", type=int, default=5, help="stages, one after the other")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=0.0,
        help="real seconds per simulated second (0 = instant)",
    )
    parser.add_argument("--networks", type=int, default=1, help="networks updated at once")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of floor + run on one server; ratio is the median of the rounds' ratios",
    )
    parser.add_argument(
        "--status-file", type=Path, help="also write the runs' final status here (for profiling)"
    )
    args = parser.parse_args()
    if not 1 <= args.members <= 255 or not 1 <= args.stages <= args.members or args.networks < 1:
        parser.error("need 1 <= --stages <= --members <= 255 and --networks >= 1")
    if args.repeat < 1:
        parser.error("need --repeat >= 1")
    from engine.runtime import devserver
    from engine.runtime.telemetry import configure_logging

    configure_logging("console")  # warnings and errors on stderr: stdout is the JSON alone
    # The SDK core prints its own warnings on the console otherwise: send them there too.
    from temporalio.runtime import LogForwardingConfig, LoggingConfig, Runtime, TelemetryConfig

    core_logs = LoggingConfig(
        filter=LoggingConfig.default.filter,
        forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
    )
    Runtime.set_default(Runtime(telemetry=TelemetryConfig(logging=core_logs)))

    def interrupted(signum: int, _frame: object) -> None:
        # Stop our server, then leave at once: a graceful worker shutdown would wait on
        # activities that can no longer reach it.
        devserver._stop_all()
        os._exit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupted)
    result = asyncio.run(
        benchmark(
            args.members,
            args.stages,
            args.time_scale,
            args.networks,
            args.status_file,
            args.repeat,
        )
    )
    print(json.dumps(result), flush=True)
    if result["runState"] != "Completed":
        raise SystemExit(1)


if __name__ == "__main__":
    main()
