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
  the members, the endpoint baseline; a health gate before the first stage,
  two after each stage at once; the release) and, per stage, one child
  workflow per member, each running as many no-op activities as a member
  update does.

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

It prints one JSON object: ``members``, ``stages``, ``wallSeconds`` and
``floorSeconds`` (from the start call to the end of the work: the run's when it
has released its network and begins to linger, open for resume and retry; the
floor's when it closes), ``ratio`` (wall / floor; with ``--repeat``, the
medians, and ``ratios``, each round's own), ``toClose`` (the same until the
workflows closed: a run's linger is a 1 ms timer, which the dev server fires
about a second late), ``stageTransitionLatencyMedianSeconds``
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
and for the floor; without ``--workers`` the worker's is this whole process's,
and the run's ``simulatedFleet`` is the part of it the simulated clusters' own
work took: real clusters do that work behind their API servers), ``cpuRatio``
(the run's worker and server CPU over the floor's, median of the rounds, and
``withoutSimulatedFleet`` the same less the fleet's share),
``historyEventsPerMember`` (all history events of the run, or the floor, over
its members: what the server persists per member), ``historyKb`` (the same in
kB of stored events, a member history's median size, and the bytes of one
run workflow's child-start events: what a member's input costs), plus ``networks`` and
``activities`` (activity tasks of the run and of the floor, counted from their
histories: they must be equal).

Before it starts, it writes the bytecode of the workflow modules (the run's and the
floor's) as ``pip install`` does: the sandbox imports a workflow's module anew for
every workflow, and without bytecode (``PYTHONDONTWRITEBYTECODE``) it would compile
it each time.

Its parts: ``bench_inputs.py`` (the fleets, the strategy, the networks),
``bench_histories.py`` (what the histories say: sizes, activity tasks, gates,
transitions), ``bench_processes.py`` (worker processes, CPU and memory from
``/proc``), ``floor_workflows.py`` and ``worker_process.py``.

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
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench_histories import history_stats, median, run_times, transition_latencies
from bench_inputs import (
    UPGRADE_EVENTS,
    Network,
    adopt_network,
    member_names,
    prepare_network,
    service_holders,
    stage_split,
    strategy_document,
    upgrade_counts,
)
from bench_processes import (
    Cpu,
    WorkerDiedError,
    WorkerFigures,
    cpu_seconds,
    kill_children,
    peak_rss_mb,
    read_cpu,
    start_workers,
    stop_child,
    stop_children,
    unless_a_worker_dies,
)
from floor_workflows import FloorInput, FloorMemberWorkflow, FloorRunWorkflow, floor_noop

if TYPE_CHECKING:
    from temporalio.client import Client

    from engine.domain.run import RunStatus
    from engine.runtime.devserver import EmbeddedServer

#: Timings of the run: poll quickly; close the run as soon as it ends.
#: The run polls quickly and closes as soon as it ends (its result is then its final status).
POLL_INTERVAL = timedelta(milliseconds=100)
LINGER = timedelta(milliseconds=1)


async def run_update(
    client: Client, network: Network, stages: int
) -> tuple[RunStatus, float, float]:
    """The run's final status, its seconds until it closed, and when it was started (epoch)."""
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
    began, started = time.time(), time.perf_counter()
    handle = await meshfleet.start_update_run(
        spec, timings=RunTimings(poll_interval=POLL_INTERVAL, linger=LINGER)
    )
    # The run closes once its linger (1 ms) fires: its result is its final status.
    final: RunStatus = await client.get_workflow_handle(
        handle.workflow_id, result_type=RunStatus
    ).result()
    return final, time.perf_counter() - started, began


async def run_floor(
    client: Client, queue: str, members: int, stages: int
) -> tuple[float, str, float]:
    """The floor's seconds until it closed, its workflow id and when it was started (epoch)."""
    prefix = f"floor/{uuid.uuid4().hex[:8]}"
    names = member_names(members)
    serving = sorted({n for holders in service_holders(names) for n in holders})
    request = FloorInput(stages=stage_split(names, stages), prefix=prefix, serving=serving)
    began, started = time.time(), time.perf_counter()
    await client.execute_workflow(FloorRunWorkflow.run, request, id=prefix, task_queue=queue)
    return time.perf_counter() - started, prefix, began


@dataclass
class Round:
    """One floor and one run (of ``networks`` networks each), measured."""

    #: Seconds from the start call to the end of the work (the slowest network's).
    wall: float
    floor: float
    #: The same until the workflows closed (a run's includes its linger timer): run, floor.
    to_close: tuple[float, float]
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
    #: Bytes of the run's histories (run and members, no network) and of the floor's.
    history_bytes: tuple[int, int] = (0, 0)
    #: Bytes of each member's history, the run's members and the floor's.
    member_bytes: tuple[list[int], list[int]] = ([], [])
    #: Bytes of the child-start events in the run workflows' histories (all networks).
    child_start_bytes: int = 0
    #: CPU seconds the simulated fleets' accesses took (in this process; None with workers).
    simulator_cpu: float | None = None


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
    statuses = [status for status, _, _ in results]
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
    floor_ids = [prefix for _, prefix, _ in floors.results] + [
        f"{prefix}/member/{name}"
        for _, prefix, _ in floors.results
        for name in member_names(members)
    ]
    floor_stats = await history_stats(client, floor_ids)
    for worker in figures:
        worker.activity_tasks = sum(
            count
            for stats in (run_stats, floor_stats)
            for identity, count in stats.activities_by_worker.items()
            if identity.startswith(f"{worker.pid}@")
        )
    times = await asyncio.gather(
        *(run_times(client, run_workflow_id(s.network, s.run_id)) for s in statuses)
    )
    counted = await asyncio.gather(*(upgrade_counts(n) for n in fleets))
    return Round(
        # Until the work ended: a run's when it began to linger, the floor's when it closed.
        wall=max(t.work_ended - began for t, (_, _, began) in zip(times, results, strict=True)),
        floor=max(floor_stats.closed_at[prefix] - began for _, prefix, began in floors.results),
        to_close=(
            max(seconds for _, seconds, _ in results),
            max(seconds for seconds, _, _ in floors.results),
        ),
        statuses=statuses,
        latencies=[
            lat
            for status, run in zip(statuses, times, strict=True)
            for lat in transition_latencies(status, run.gates)
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
        history_bytes=(sum(own.sizes.values()), sum(floor_stats.sizes.values())),
        member_bytes=(
            [size for workflow_id, size in own.sizes.items() if "/member/" in workflow_id],
            [size for workflow_id, size in floor_stats.sizes.items() if "/member/" in workflow_id],
        ),
        child_start_bytes=own.child_start_bytes,
        simulator_cpu=None if processes else sum(n.backend.cpu_seconds for n in fleets),
    )


@dataclass
class Floors:
    """The floors of a round: (seconds, workflow id prefix) each, and the CPU at their end."""

    results: list[tuple[float, str, float]]
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
) -> tuple[Floors, list[tuple[RunStatus, float, float]]]:
    """The floors, then the runs: on the worker processes, or on workers in this process
    (``in_process``). ``meter`` reads the CPU between the two."""
    from temporalio.worker import Worker

    from engine.runtime.worker import build_worker, workflow_runner

    def floors() -> Awaitable[list[tuple[float, str, float]]]:
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
    simulated = [r.simulator_cpu for r in rounds if r.simulator_cpu is not None]
    if simulated:
        # Part of the run's worker CPU: the simulated clusters' own work, which real
        # clusters do behind their API servers.
        fleet = statistics.median(simulated)
        seconds["run"]["simulatedFleet"] = round(fleet, 2)
        per_member["run"]["simulatedFleet"] = round(fleet * 1000 / members, 1)
    return seconds, per_member


def cpu_ratios(rounds: list[Round]) -> dict[str, float | None]:
    """The run's CPU (worker and server) over the floor's, the median of the rounds' own;
    and the same without the simulated fleet's share (None with worker processes)."""
    totals, without = [], []
    for r in rounds:
        floor = r.cpu[0].worker + r.cpu[0].server
        run = r.cpu[1].worker + r.cpu[1].server
        totals.append(run / floor)
        if r.simulator_cpu is not None:
            without.append((run - r.simulator_cpu) / floor)
    return {"total": median(totals), "withoutSimulatedFleet": median(without)}


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
    close_ratios = [round(r.to_close[0] / r.to_close[1], 3) for r in rounds]
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
        #: The same until the workflows closed: a run closes when its linger timer fires.
        "toClose": {
            "wallSeconds": median([r.to_close[0] for r in rounds]),
            "floorSeconds": median([r.to_close[1] for r in rounds]),
            "ratio": median(close_ratios),
            "ratios": close_ratios,
        },
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
        #: CPU, not wall time: on a shared VM it moves far less from round to round.
        "cpuRatio": cpu_ratios(rounds),
        #: History events per member, all workflows of the run (or the floor) together.
        "historyEventsPerMember": {
            "run": round(statistics.median([r.events[0] for r in rounds]) / members / networks, 1),
            "floor": round(
                statistics.median([r.events[1] for r in rounds]) / members / networks, 1
            ),
        },
        #: History bytes (events as stored): per member, a member's (median), and the
        #: child-start events of one network's run workflow (median over the rounds).
        "historyKb": {
            "perMember": {
                side: round(
                    statistics.median([r.history_bytes[i] for r in rounds])
                    / members
                    / networks
                    / 1000,
                    2,
                )
                for i, side in enumerate(("run", "floor"))
            },
            "memberMedian": {
                side: round(
                    statistics.median([b for r in rounds for b in r.member_bytes[i]] or [0]) / 1000,
                    2,
                )
                for i, side in enumerate(("run", "floor"))
            },
            "runChildStarts": round(
                statistics.median([r.child_start_bytes for r in rounds]) / networks / 1000, 1
            ),
        },
        "activities": {
            "run": sum(r.activities[0] for r in rounds),
            "floor": sum(r.activities[1] for r in rounds),
        },
        "measuredAt": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def compile_workflow_modules() -> None:
    """Write the bytecode of the modules the workflow sandbox imports anew for every
    workflow (the run's and the floor's), as ``pip install`` does for an installed worker.

    Without it, and with ``PYTHONDONTWRITEBYTECODE`` set (as on this project's CI),
    each of a run's members would compile ``workflows/member_update.py`` from its
    source (about 1.4 ms) and each floor member ``floor_workflows.py`` (0.3 ms): a
    cost that no installed worker pays, and that would count against the run.
    """
    import compileall

    here = Path(__file__).resolve().parent
    compileall.compile_dir(here.parent / "workflows", quiet=1)
    compileall.compile_file(here / "floor_workflows.py", quiet=1)


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
        kill_children()  # SIGKILL: no grace here, and PDEATHSIG follows anyway
        devserver._stop_all()
        os._exit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupted)
    compile_workflow_modules()
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
