"""How much does meshfleet cost on top of Temporal? An update run against its floor.

    .venv/bin/python benchmarks/update_run.py [--members 255] [--stages 5] [--time-scale 0]
                                              [--networks K] [--repeat N] [--workers N]

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

``--workers N`` runs the workers (the floor's and the networks') in N worker
processes (``worker_process.py``) instead of this one: they poll the same task
queues and open the same simulated worlds (one SQLite transaction per access,
as workers on different machines would share real clusters). They are stopped
at the end of each round, on failure, on SIGINT/SIGTERM (and die with the
benchmark whatever kills it). One that ends before its round is over fails the
benchmark at once (exit code 1, its pid and exit code on stderr): the round
would otherwise wait on tasks nobody polls.

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
``maxHistoryEvents`` (the largest history among the run, its members and its
network, every run of each continue-as-new chain), ``continuedAsNew`` (the
continue-as-new events among them), ``workerPeakRssMb`` (the peak resident
memory of the largest worker: this process's, worker, client and simulated
fleet together, without ``--workers``), ``workerProcesses`` (each one's pid,
peak RSS, CPU seconds and the activity tasks it ran, from the histories'
worker identities), ``exactlyOnce`` and ``upgradesPerMember`` (from the
simulator's audit: every member's control plane and Cilium upgrade started
and completed exactly once), ``cpuSeconds`` and ``cpuMillisecondsPerMember``
(the workers' and the Temporal server's CPU, read from ``/proc``, for the run
and for the floor; without ``--workers`` the worker's is this whole process's),
``historyEventsPerMember`` (all history events of the run, or the floor, over
its members: what the server persists per member), plus ``networks`` and
``activities`` (activity tasks of the run and of the floor, counted from their
histories: they must be equal).

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
import atexit
import collections
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from floor_workflows import FloorInput, FloorMemberWorkflow, FloorRunWorkflow, floor_noop

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowHistory

    from activities.backends.simulated import SimulatedFleetBackend
    from engine.domain.run import RunStatus
    from engine.runtime.devserver import EmbeddedServer

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


@dataclass
class HistoryStats:
    """What the histories of a set of workflows (every run of each chain) say."""

    max_events: int
    #: Events of all of them together.
    events: int
    activities: int
    continued_as_new: int
    #: Activity tasks per worker identity (``pid@host``) that ran them.
    activities_by_worker: collections.Counter[str]


async def history_stats(client: Client, workflow_ids: list[str]) -> HistoryStats:
    """Largest history, activity tasks scheduled, continue-as-new events, over these
    workflows and every run of their continue-as-new chains."""
    from engine.runtime.simulate import ended_in_continue_as_new, history_chain

    limit = asyncio.Semaphore(16)

    async def one(workflow_id: str) -> list[WorkflowHistory]:
        async with limit:
            return await history_chain(client, workflow_id)

    chains = await asyncio.gather(*(one(i) for i in workflow_ids))
    runs = [history for chain in chains for history in chain]
    by_worker: collections.Counter[str] = collections.Counter(
        e.activity_task_started_event_attributes.identity
        for h in runs
        for e in h.events
        if e.HasField("activity_task_started_event_attributes")
    )
    return HistoryStats(
        max_events=max(len(h.events) for h in runs),
        events=sum(len(h.events) for h in runs),
        activities=sum(
            1
            for h in runs
            for e in h.events
            if e.HasField("activity_task_scheduled_event_attributes")
        ),
        continued_as_new=sum(1 for h in runs if ended_in_continue_as_new(h)),
        activities_by_worker=by_worker,
    )


Interval = tuple[dt.datetime, dt.datetime]
T = TypeVar("T")

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
    state: Path
    backend: SimulatedFleetBackend


async def prepare_network(
    state: Path, index: int, members: int, stages: int, time_scale: float, *, shared: bool
) -> Network:
    """A freshly loaded simulated fleet for network ``index``.

    ``shared``: worker processes open the world too, so every access is a transaction;
    otherwise the world is private to this process and stored at most once a second.
    """
    from activities.backends.simulated import SimulatedFleetBackend
    from engine.domain.fleet import parse_fleet

    name = f"bench-{index}"
    names = member_names(members)
    directory = state / f"fleet-{index}"
    backend = SimulatedFleetBackend(directory, write_behind=None if shared else 1.0)
    fleet = parse_fleet(fleet_document(name, names, stages, time_scale))
    await asyncio.to_thread(backend.load, fleet, reset=True)
    return Network(name, names, f"bench-{index}-{uuid.uuid4().hex[:6]}", directory, backend)


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


# --- worker processes, CPU and memory -------------------------------------------------------

WORKER_SCRIPT = Path(__file__).with_name("worker_process.py")
#: How long a worker process may take to connect and poll before the benchmark gives up.
WORKER_READY_TIMEOUT = 120.0
#: How long a stopped worker process may take to leave before it is killed.
WORKER_STOP_GRACE = 10.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: Worker processes started and not stopped yet (stopped on exit and on signals too).
_children: set[subprocess.Popen[bytes]] = set()


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (field 3 onwards)."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds process ``pid`` has used so far."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def group_cpu_seconds(group: int) -> float:
    """CPU seconds used so far by the live processes of process group ``group``."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat_fields(int(entry.name))
        except OSError:  # gone in between
            continue
        if int(fields[2]) == group:
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def peak_rss_mb(pid: int) -> float:
    """The peak resident memory of process ``pid`` (``VmHWM``), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def stop_child(child: subprocess.Popen[bytes]) -> None:
    """Stop one worker process: SIGTERM, then SIGKILL after a grace period."""
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=WORKER_STOP_GRACE)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    _children.discard(child)


def stop_children() -> None:
    """Stop every worker process still running (at exit, on failure, on signals)."""
    for child in list(_children):
        stop_child(child)


atexit.register(stop_children)


class WorkerDiedError(RuntimeError):
    """A worker process ended while the round still needed it."""


def spawn_worker(command: list[str]) -> subprocess.Popen[bytes]:
    """Start one worker process (it starts in well under a second; polling comes later)."""
    child = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,  # "ready", then nothing: it logs on our stderr
        start_new_session=True,  # Ctrl-C reaches the benchmark, which stops them
    )
    _children.add(child)
    return child


async def start_workers(
    count: int, address: str, floor_queue: str, networks: list[Network]
) -> list[subprocess.Popen[bytes]]:
    """``count`` worker processes serving the floor and every network; once all poll."""
    command = [
        sys.executable,
        str(WORKER_SCRIPT),
        address,
        floor_queue,
        *(f"{n.queue}={n.state}" for n in networks),
    ]
    started: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            started.append(spawn_worker(command))
        for child in started:
            assert child.stdout is not None
            line = await asyncio.wait_for(
                asyncio.to_thread(child.stdout.readline), timeout=WORKER_READY_TIMEOUT
            )
            if line.strip() != b"ready":  # it closed its output: it is ending
                code = await asyncio.to_thread(child.wait)
                raise WorkerDiedError(
                    f"worker process {child.pid} ended (exit code {code}) before it was ready"
                )
    except BaseException:
        for child in started:
            stop_child(child)
        raise
    pids = " ".join(str(c.pid) for c in started)
    print(f"worker processes ready: {pids}", file=sys.stderr, flush=True)
    return started


#: How often the benchmark looks whether its worker processes are still there.
WORKER_WATCH_INTERVAL = 0.5


async def unless_a_worker_dies(
    children: list[subprocess.Popen[bytes]], work: Coroutine[Any, Any, T]
) -> T:
    """``work``'s result; but should a worker process end first, ``WorkerDiedError``
    (the round would otherwise wait forever for tasks nobody polls)."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=WORKER_WATCH_INTERVAL)
        if done:
            return task.result()
        ended = [c for c in children if c.poll() is not None]
        if ended:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise WorkerDiedError(
                ", ".join(f"worker process {c.pid} ended (exit code {c.returncode})" for c in ended)
                + " before the round was over"
            )


@dataclass
class Cpu:
    """CPU seconds used so far by the workers and by the Temporal server."""

    worker: float
    server: float

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(self.worker - other.worker, self.server - other.server)


def read_cpu(server_pid: int, children: list[subprocess.Popen[bytes]]) -> Cpu:
    """The workers' CPU (the worker processes', or this process's when it is the worker)
    and the server's (its whole process group)."""
    worker = sum(cpu_seconds(c.pid) for c in children) if children else time.process_time()
    return Cpu(worker, group_cpu_seconds(server_pid))


@dataclass
class WorkerFigures:
    """One worker process of a round: its peak memory, its CPU, the activity tasks it ran."""

    pid: int
    peak_rss_mb: float
    cpu_seconds: float
    activity_tasks: int = 0

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "peakRssMb": self.peak_rss_mb,
            "cpuSeconds": round(self.cpu_seconds, 2),
            "activityTasks": self.activity_tasks,
        }


#: Audit events of one member's upgrade, each expected exactly once per member.
UPGRADE_EVENTS = (
    "controlPlaneUpgradeStarted",
    "controlPlaneUpgradeCompleted",
    "ciliumUpgradeStarted",
    "ciliumUpgradeCompleted",
)


async def upgrade_counts(network: Network) -> dict[str, dict[str, int]]:
    """Per upgrade audit event, how many times each member of ``network`` has it."""
    entries = await asyncio.to_thread(network.backend.audit)
    counts = {event: dict.fromkeys(network.members, 0) for event in UPGRADE_EVENTS}
    for entry in entries:
        if entry.event.value in counts and entry.cluster in counts[entry.event.value]:
            counts[entry.event.value][entry.cluster] += 1
    return counts


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
    continued_as_new: int
    #: History events of the run (its members and network too) and of the floor.
    events: tuple[int, int]
    #: CPU of the floor and of the run.
    cpu: tuple[Cpu, Cpu]
    #: Per upgrade audit event, per member (of every network): how many times it happened.
    upgrades: dict[str, list[int]]
    #: The worker processes (none when this process is the worker).
    workers: list[WorkerFigures]


async def measure_round(
    client: Client,
    server: EmbeddedServer,
    state: Path,
    first: int,
    members: int,
    stages: int,
    time_scale: float,
    networks: int,
    processes: int | None,
) -> Round:
    """The floor, then the run, of networks ``first .. first + networks - 1``.

    ``processes``: that many worker processes share the work (and each world);
    None: this process is the only worker.
    """
    from engine.domain.network import network_workflow_id
    from engine.domain.run import member_workflow_id, run_workflow_id

    fleets = [
        await prepare_network(
            state, first + i, members, stages, time_scale, shared=processes is not None
        )
        for i in range(networks)
    ]
    floor_queue = f"floor-{uuid.uuid4().hex[:6]}"
    assert server.pid is not None
    children = (
        await start_workers(processes, server.address, floor_queue, fleets) if processes else []
    )
    server_pid = server.pid
    try:
        before = read_cpu(server_pid, children)
        floors, results = await unless_a_worker_dies(
            children,
            floor_and_run(
                client,
                fleets,
                floor_queue,
                members,
                stages,
                lambda: read_cpu(server_pid, children),
                in_process=processes is None,
            ),
        )
        after = read_cpu(server_pid, children)
        figures = [WorkerFigures(c.pid, peak_rss_mb(c.pid), cpu_seconds(c.pid)) for c in children]
    finally:
        for child in children:
            stop_child(child)
    floor_cpu, run_cpu = floors.cpu - before, after - floors.cpu
    statuses = [status for status, _ in results]
    ids = []
    for status in statuses:
        ids.append(run_workflow_id(status.network, status.run_id))
        ids += [
            member_workflow_id(status.network, status.run_id, m.name)
            for _, _, m in status.members()
            if m.attempts > 0
        ]
    # The networks count for history sizes, not for the activities compared with the floor
    # (the floor has no network: its lease watch is no work the run does).
    run_stats = await history_stats(
        client, ids + [network_workflow_id(status.network) for status in statuses]
    )
    own = await history_stats(client, ids)
    run_stats = dataclasses.replace(
        run_stats, activities=own.activities, activities_by_worker=own.activities_by_worker
    )
    floor_ids = [prefix for _, prefix in floors.results] + [
        f"{prefix}/member/{name}" for _, prefix in floors.results for name in member_names(members)
    ]
    floor_stats = await history_stats(client, floor_ids)
    for worker in figures:
        worker.activity_tasks = sum(
            count
            for stats in (run_stats, floor_stats)
            for identity, count in stats.activities_by_worker.items()
            if identity.startswith(f"{worker.pid}@")
        )
    gates = await asyncio.gather(
        *(gate_intervals(client, run_workflow_id(s.network, s.run_id)) for s in statuses)
    )
    counted = await asyncio.gather(*(upgrade_counts(n) for n in fleets))
    return Round(
        wall=max(seconds for _, seconds in results),
        floor=max(seconds for seconds, _ in floors.results),
        statuses=statuses,
        latencies=[
            lat
            for status, excluded in zip(statuses, gates, strict=True)
            for lat in transition_latencies(status, excluded)
        ],
        with_gates=[lat for status in statuses for lat in transition_latencies(status)],
        max_events=run_stats.max_events,
        activities=(run_stats.activities, floor_stats.activities),
        continued_as_new=run_stats.continued_as_new,
        events=(run_stats.events, floor_stats.events),
        cpu=(floor_cpu, run_cpu),
        upgrades={
            event: [n for counts in counted for n in counts[event].values()]
            for event in UPGRADE_EVENTS
        },
        workers=figures,
    )


@dataclass
class Floors:
    """The floors of a round: (seconds, workflow id prefix) each, and the CPU at their end."""

    results: list[tuple[float, str]]
    cpu: Cpu


async def floor_and_run(
    client: Client,
    fleets: list[Network],
    floor_queue: str,
    members: int,
    stages: int,
    meter: Callable[[], Cpu],
    *,
    in_process: bool,
) -> tuple[Floors, list[tuple[RunStatus, float]]]:
    """The floors, then the runs: on the worker processes, or on workers in this process
    (``in_process``). ``meter`` reads the CPU between the two."""
    from temporalio.worker import Worker

    from engine.runtime.worker import build_worker, workflow_runner

    def floors() -> Awaitable[list[tuple[float, str]]]:
        return asyncio.gather(*(run_floor(client, floor_queue, members, stages) for _ in fleets))

    if not in_process:
        floored = Floors(await floors(), meter())
        return floored, await asyncio.gather(*(run_update(client, n, stages) for n in fleets))
    floor_worker = Worker(
        client,
        task_queue=floor_queue,
        workflows=[FloorRunWorkflow, FloorMemberWorkflow],
        activities=[floor_noop],
        workflow_runner=workflow_runner(),
    )
    async with floor_worker:
        floored = Floors(await floors(), meter())
    async with contextlib.AsyncExitStack() as stack:
        for network in fleets:
            worker = build_worker(client, network.queue, backend=network.backend)
            await stack.enter_async_context(worker)
        results = await asyncio.gather(*(run_update(client, n, stages) for n in fleets))
    return floored, results


def spread(values: list[int]) -> dict[str, int]:
    return {"min": min(values, default=0), "max": max(values, default=0)}


def cpu_figures(rounds: list[Round], members: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """CPU seconds of the run and of the floor (medians of the rounds), and per member (ms)."""
    seconds: dict[str, Any] = {}
    per_member: dict[str, Any] = {}
    for side, index in (("run", 1), ("floor", 0)):
        worker = statistics.median([r.cpu[index].worker for r in rounds])
        server = statistics.median([r.cpu[index].server for r in rounds])
        seconds[side] = {"worker": round(worker, 2), "server": round(server, 2)}
        per_member[side] = {
            "worker": round(worker * 1000 / members, 1),
            "server": round(server * 1000 / members, 1),
        }
    return seconds, per_member


async def benchmark(
    members: int,
    stages: int,
    time_scale: float,
    networks: int,
    status_file: Path | None = None,
    repeat: int = 1,
    processes: int | None = None,
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
                        client,
                        server,
                        state,
                        index * networks,
                        members,
                        stages,
                        time_scale,
                        networks,
                        processes,
                    )
                )
        finally:
            stop_children()
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
    upgrades = {event: [n for r in rounds for n in r.upgrades[event]] for event in UPGRADE_EVENTS}
    cpu_seconds, cpu_per_member = cpu_figures(rounds, members * networks)
    own_rss = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    worker_processes = [w for r in rounds for w in r.workers]
    return {
        #: Completed, or what kept a run from completing (then the exit code is 1).
        "runState": "; ".join(not_done) or State.COMPLETED.value,
        "members": members,
        "stages": stages,
        "networks": networks,
        #: Worker processes (null: the benchmark's own process is the only worker).
        "workers": processes,
        "wallSeconds": median([r.wall for r in rounds]),
        "floorSeconds": median([r.floor for r in rounds]),
        #: The median over the rounds of each round's own wall / floor.
        "ratio": median(ratios),
        "ratios": ratios,
        "stageTransitionLatencyMedianSeconds": median([x for r in rounds for x in r.latencies]),
        "stageTransitionWithGatesMedianSeconds": median([x for r in rounds for x in r.with_gates]),
        "maxHistoryEvents": max(r.max_events for r in rounds),
        #: Continue-as-new events of the runs, their members and their networks (all rounds).
        "continuedAsNew": sum(r.continued_as_new for r in rounds),
        #: The largest worker's peak memory (this process's when it is the worker).
        "workerPeakRssMb": max((w.peak_rss_mb for w in worker_processes), default=own_rss),
        "benchmarkPeakRssMb": own_rss,
        "workerProcesses": [w.to_json_dict() for w in worker_processes],
        #: Every member's control plane and Cilium upgraded exactly once (from the audit).
        "exactlyOnce": all(n == 1 for counts in upgrades.values() for n in counts),
        "upgradesPerMember": {
            "controlPlane": spread(upgrades["controlPlaneUpgradeCompleted"]),
            "cilium": spread(upgrades["ciliumUpgradeCompleted"]),
        },
        "cpuSeconds": cpu_seconds,
        "cpuMillisecondsPerMember": cpu_per_member,
        #: History events per member, all workflows of the run (or the floor) together.
        "historyEventsPerMember": {
            "run": round(statistics.median([r.events[0] for r in rounds]) / members / networks, 1),
            "floor": round(
                statistics.median([r.events[1] for r in rounds]) / members / networks, 1
            ),
        },
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
        "--workers",
        type=int,
        help="worker processes sharing the work (default: this process is the only worker)",
    )
    parser.add_argument(
        "--status-file", type=Path, help="also write the runs' final status here (for profiling)"
    )
    args = parser.parse_args()
    if not 1 <= args.members <= 255 or not 1 <= args.stages <= args.members or args.networks < 1:
        parser.error("need 1 <= --stages <= --members <= 255 and --networks >= 1")
    if args.repeat < 1:
        parser.error("need --repeat >= 1")
    if args.workers is not None and args.workers < 1:
        parser.error("need --workers >= 1")
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
        for child in list(_children):
            with contextlib.suppress(OSError):
                child.kill()  # SIGKILL: no grace here, and PDEATHSIG follows anyway
        devserver._stop_all()
        os._exit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupted)
    try:
        result = asyncio.run(
            benchmark(
                args.members,
                args.stages,
                args.time_scale,
                args.networks,
                args.status_file,
                args.repeat,
                args.workers,
            )
        )
    except WorkerDiedError as error:
        print(f"benchmark failed: {error}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    print(json.dumps(result), flush=True)
    if result["runState"] != "Completed":
        raise SystemExit(1)


if __name__ == "__main__":
    main()
