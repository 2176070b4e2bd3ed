"""Rehearse a strategy on a simulated fleet, in one process, and report what happened.

``meshfleet simulate`` and ``meshfleet demo`` come here. One rehearsal:

1. reads the fleet file, the strategy and the target, and plans (every
   problem of every input at once, before anything starts);
2. uses the configured Temporal, or else starts the embedded server in a
   private, throw-away state directory on free ports (never the user's
   ``meshfleet server``);
3. runs a worker on a private task queue over a freshly loaded simulated
   fleet, creates the network, starts the update run and keeps its gates
   moving (``approve_all``; ScheduledStart gates always open at once, since a
   rehearsal compresses time);
4. waits for the end and builds the report: plan, final status, the
   simulator's audit log and continuity violations, history sizes, and a
   link to the run in the Web UI; and the run's timeline (``--html``), with
   each member's steps read from the same histories that are counted.

Time is compressed by one factor, ``time_scale`` (real seconds per simulated
second, the fleet file's ``timeScale`` unless overridden): the simulated
operations run at that speed, and the strategy's soaks (``afterStageWait``)
and soak check intervals are scaled by it too. Maintenance windows are not
rehearsed: they are read against the wall clock, which a rehearsal does not
compress, so members' windows are dropped (and named in ``notes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import shutil
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog
from temporalio.api.enums.v1 import ContinueAsNewInitiator
from temporalio.client import Client, WorkflowHistory

from activities.backends.simulated import SimulatedFleetBackend
from engine.domain.errors import FieldError, InvalidInputError, MeshfleetError
from engine.domain.fleet import SimulatedFleet
from engine.domain.member import Member
from engine.domain.network import NetworkSettings, network_name_problem, network_workflow_id
from engine.domain.plan import Plan
from engine.domain.run import (
    GateKind,
    GateState,
    RunStatus,
    RunTimings,
    State,
    member_workflow_id,
    run_workflow_id,
)
from engine.domain.runspec import RunSpec
from engine.domain.strategy import UpdateStrategy
from engine.domain.versions import Version
from engine.runtime import devserver
from engine.runtime.client import MeshfleetClient
from engine.runtime.connection import ConnectionSettings, connect_client
from engine.runtime.fleet_file import load_fleet
from engine.runtime.preview import preview
from engine.runtime.report_html import StepSpan, Timeline
from engine.runtime.runs import UpdateRunHandle, new_run_name
from engine.runtime.timeline import member_steps, rehearsal_timeline
from engine.runtime.worker import build_worker
from strategies import ReleaseCatalog, load_catalog, load_strategy
from strategies.continuity import copies_from_fleet

log = structlog.get_logger(__name__)

#: Exactly the report's keys, in order (the contract of ``--report`` and ``--output json``).
REPORT_KEYS = (
    "runId",
    "state",
    "target",
    "plan",
    "status",
    "audit",
    "violations",
    "history",
    "uiUrl",
)

#: A soak is checked at most this often, however much time is compressed.
MIN_SOAK_CHECK_INTERVAL = dt.timedelta(seconds=1)
#: How often the rehearsal looks at the run's gates.
GATE_POLL_INTERVAL = dt.timedelta(milliseconds=200)
#: A rehearsal's run closes soon after it ends: nobody resumes a rehearsal.
REHEARSAL_TIMINGS = RunTimings(
    poll_interval=dt.timedelta(milliseconds=200),
    linger=dt.timedelta(seconds=1),
)
#: At most this many history fetches at once when counting events.
HISTORY_FETCH_CONCURRENCY = 16


@dataclass(frozen=True)
class Rehearsal:
    """Validated inputs of one rehearsal, already adapted to compressed time."""

    fleet: SimulatedFleet
    strategy: UpdateStrategy
    target: Version
    catalog: ReleaseCatalog
    network: str
    members: list[str]
    #: The plan as ``meshfleet plan --output json`` prints it, for these inputs.
    plan: Plan
    approve_all: bool = False
    #: With ``approve_all``: how long an Approval gate stays open before it is approved.
    approve_after: dt.timedelta = dt.timedelta(0)
    run_name: str = field(default_factory=new_run_name)
    timings: RunTimings = field(default_factory=lambda: REHEARSAL_TIMINGS.model_copy())
    #: What the rehearsal changed or could not rehearse, for the person reading it.
    notes: list[str] = field(default_factory=list)
    #: Members the continuity rule never lets drain (the strategy allowed them), as JSON.
    undrainable: list[dict[str, object]] = field(default_factory=list)

    @property
    def time_scale(self) -> float:
        return self.fleet.spec.time_scale


def _scaled(value: dt.timedelta, factor: float) -> dt.timedelta:
    return dt.timedelta(seconds=value.total_seconds() * factor)


def compress_strategy(strategy: UpdateStrategy, time_scale: float) -> UpdateStrategy:
    """The strategy with soaks and soak check intervals in rehearsal time."""
    stages = [
        stage.model_copy(
            update={
                "after_stage_wait": (
                    None
                    if stage.after_stage_wait is None
                    else _scaled(stage.after_stage_wait, time_scale)
                )
            }
        )
        for stage in strategy.spec.stages
    ]
    health = strategy.spec.health
    interval = max(_scaled(health.soak_check_interval, time_scale), MIN_SOAK_CHECK_INTERVAL)
    spec = strategy.spec.model_copy(
        update={
            "stages": stages,
            "health": health.model_copy(update={"soak_check_interval": interval}),
        }
    )
    return strategy.model_copy(update={"spec": spec})


def _choose_network(
    fleet: SimulatedFleet, wanted: str | None
) -> tuple[str, list[str], list[FieldError]]:
    """The network to create: named, the file's only one, or every cluster."""
    networks = {n.name: n.members for n in fleet.spec.networks}
    every = [c.name for c in fleet.spec.clusters]
    if wanted is not None:
        if wanted in networks:
            return wanted, list(networks[wanted]), []
        if networks:
            known = ", ".join(networks)
            problem = f"the fleet file has no network {wanted!r} (it has: {known})"
            return wanted, [], [FieldError(path="--network", message=problem)]
        return wanted, every, []
    if len(networks) == 1:
        name, members = next(iter(networks.items()))
        return name, list(members), []
    if len(networks) > 1:
        problem = f"the fleet file has several networks ({', '.join(networks)}); choose one"
        return "", [], [FieldError(path="--network", message=problem)]
    return fleet.metadata.name, every, []


def prepare_rehearsal(
    fleet_file: Path,
    strategy_file: Path,
    target: str,
    *,
    network: str | None = None,
    time_scale: float | None = None,
    approve_all: bool = False,
    approve_after: dt.timedelta = dt.timedelta(0),
    now: dt.datetime | None = None,
) -> Rehearsal:
    """Read and check every input; raise InvalidInputError with all the problems at once."""
    errors: list[FieldError] = []

    def collect(error: InvalidInputError) -> None:
        prefix = f"{error.source}: " if error.source else ""
        errors.extend(FieldError(path=prefix + e.path, message=e.message) for e in error.errors)

    fleet: SimulatedFleet | None = None
    strategy: UpdateStrategy | None = None
    version: Version | None = None
    try:
        fleet = load_fleet(fleet_file)
    except InvalidInputError as error:
        collect(error)
    try:
        strategy = load_strategy(strategy_file, check_rules=False)
    except InvalidInputError as error:
        collect(error)
    try:
        version = Version.parse(target)
    except ValueError as error:
        errors.append(FieldError(path="--target", message=str(error)))
    if time_scale is not None and not time_scale >= 0:
        errors.append(
            FieldError(path="--time-scale", message="must be >= 0 (0 = instant operations)")
        )
    catalog = load_catalog(None)
    name, members = "", list[str]()
    if fleet is not None:
        name, members, problems = _choose_network(fleet, network)
        errors.extend(problems)
        if not problems and network_name_problem(name):
            errors.append(FieldError(path="--network", message=str(network_name_problem(name))))
    if errors or fleet is None or strategy is None or version is None:
        raise InvalidInputError(errors)

    scale = fleet.spec.time_scale if time_scale is None else time_scale
    notes: list[str] = []
    windowed = [c.name for c in fleet.spec.clusters if c.maintenance_window is not None]
    if windowed:
        notes.append(
            "maintenance windows are not rehearsed (time is compressed, windows are read "
            f"against the wall clock); ignored for: {', '.join(windowed)}"
        )
    rehearsal_fleet = fleet.model_copy(
        update={
            "spec": fleet.spec.model_copy(
                update={
                    "time_scale": scale,
                    "clusters": [
                        c.model_copy(update={"maintenance_window": None})
                        for c in fleet.spec.clusters
                    ],
                }
            )
        }
    )
    compressed = compress_strategy(strategy, scale)
    by_name = {c.name: c for c in rehearsal_fleet.spec.clusters}
    in_network: list[Member] = [by_name[m] for m in members]
    try:
        planned = preview(
            in_network,
            copies_from_fleet(fleet.spec.global_services),
            compressed,
            version,
            catalog,
            now or dt.datetime.now(dt.UTC),
        )
    except InvalidInputError as error:
        collect(error)
        raise InvalidInputError(errors) from None
    if planned.refusals():
        raise InvalidInputError(planned.refusals())
    the_plan = planned.plan
    notes += [f"never drainable, allowed by the strategy: {u}" for u in planned.undrainable]
    if any(g.type.value == "ScheduledStart" for s in strategy.spec.stages for g in s.before_gates):
        notes.append("ScheduledStart gates open as soon as they are reached (time is compressed)")
    return Rehearsal(
        fleet=rehearsal_fleet,
        strategy=compressed,
        target=version,
        catalog=catalog,
        network=name,
        members=members,
        plan=the_plan,
        approve_all=approve_all,
        approve_after=approve_after,
        notes=notes,
        undrainable=[u.to_json_dict() for u in planned.undrainable],
    )


# --- running it -----------------------------------------------------------------------------


@dataclass
class Place:
    """Where a rehearsal runs: a client, the Web UI, and what to tear down afterwards."""

    client: Client
    address: str
    namespace: str
    ui_url: str | None
    embedded: devserver.EmbeddedServer | None = None
    private_dir: Path | None = None

    def close(self) -> None:
        """Stop the private server and forget its state (a rehearsal leaves nothing behind)."""
        if self.embedded is not None:
            self.embedded.stop()
        if self.private_dir is not None:
            shutil.rmtree(self.private_dir, ignore_errors=True)


async def open_place(settings: ConnectionSettings, state_dir: Path) -> Place:
    """The configured Temporal, or a private embedded server on free ports."""
    if settings.address is not None:
        client = await connect_client(settings.address, settings)
        return Place(client, settings.address, settings.namespace, ui_url=None)
    private = state_dir / "simulate" / uuid.uuid4().hex[:12]
    try:
        server = await devserver.start_embedded_server(private, grpc_port=None, ui_port=None)
        client = await connect_client(server.address, settings)
    except BaseException:
        shutil.rmtree(private, ignore_errors=True)
        raise
    return Place(
        client,
        server.address,
        settings.namespace,
        server.ui_url,
        embedded=server,
        private_dir=private,
    )


def workflow_url(ui_url: str | None, namespace: str, workflow_id: str) -> str | None:
    """A link to a workflow in the Web UI."""
    if ui_url is None:
        return None
    base = ui_url.rstrip("/")
    return f"{base}/namespaces/{quote(namespace, safe='')}/workflows/{quote(workflow_id, safe='')}"


class RehearsalEvents:
    """What a rehearsal tells the person watching (the CLI overrides what it shows)."""

    def note(self, text: str) -> None:
        """Something worth a line: the server, the network, a gate approved."""

    def gate_waiting(self, gate_id: str, display_name: str, command: str) -> None:
        """An Approval gate waits and nobody will approve it but a person."""


@dataclass
class History:
    """History sizes of a run: its workflows, the largest history, continue-as-new counts."""

    workflows: int
    max_events: int
    #: Each started member's steps, read from the same histories (for the HTML timeline).
    member_steps: dict[str, list[StepSpan]] = field(default_factory=dict)
    #: Continue-as-new events over every workflow of the run and its network's workflow.
    continued_as_new: int = 0

    def to_json_dict(self) -> dict[str, int]:
        """The report's ``history`` section."""
        return {
            "workflows": self.workflows,
            "maxEvents": self.max_events,
            "continuedAsNew": self.continued_as_new,
        }


async def history_chain(client: Client, workflow_id: str) -> list[WorkflowHistory]:
    """Every run of ``workflow_id``'s continue-as-new chain, newest first.

    Each run's history starts with the run it continues (``continued_execution_run_id``),
    so the chain is walked back from the newest run without asking visibility.
    """
    chain: list[WorkflowHistory] = []
    run_id: str | None = None
    while True:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        chain.append(history)
        started = history.events[0].workflow_execution_started_event_attributes
        # A retry or a cron run also names the run before it: only continue-as-new chains.
        if started.initiator != ContinueAsNewInitiator.CONTINUE_AS_NEW_INITIATOR_WORKFLOW:
            return chain
        run_id = started.continued_execution_run_id


def ended_in_continue_as_new(history: WorkflowHistory) -> bool:
    """Whether this run of a workflow ended by continuing as new."""
    return bool(history.events) and history.events[-1].HasField(
        "workflow_execution_continued_as_new_event_attributes"
    )


async def count_history(client: Client, status: RunStatus) -> History:
    """How many workflows the run used, the largest history among them and its network's
    (every run of each continue-as-new chain), how often they continued as new, and each
    started member's steps (for the HTML timeline)."""
    started = [m.name for _, _, m in status.members() if m.attempts > 0]
    ids: list[tuple[str | None, str]] = [
        (None, network_workflow_id(status.network)),
        (None, run_workflow_id(status.network, status.run_id)),
    ]
    ids += [(m, member_workflow_id(status.network, status.run_id, m)) for m in started]
    limit = asyncio.Semaphore(HISTORY_FETCH_CONCURRENCY)
    steps: dict[str, list[StepSpan]] = {}

    async def chain(member: str | None, workflow_id: str) -> list[WorkflowHistory]:
        async with limit:
            found = await history_chain(client, workflow_id)
        if member is not None:
            # Oldest run first: a member's steps in the order they happened.
            steps[member] = [s for h in reversed(found) for s in member_steps(h.events)]
        return found

    chains = await asyncio.gather(*(chain(m, i) for m, i in ids))
    runs = [history for found in chains for history in found]
    executions = 1 + sum(m.attempts for _, _, m in status.members())
    return History(
        workflows=executions,
        max_events=max((len(h.events) for h in runs), default=0),
        member_steps=steps,
        continued_as_new=sum(1 for h in runs if ended_in_continue_as_new(h)),
    )


def status_tree(status: RunStatus) -> list[dict[str, Any]]:
    """Stages -> groups -> members, with the fields a report reader needs."""

    def when(value: dt.datetime | None) -> str | None:
        return value.isoformat() if value else None

    return [
        {
            "name": stage.name,
            "state": stage.state.value,
            "message": stage.message,
            "startTime": when(stage.start_time),
            "completedTime": when(stage.completed_time),
            "groups": [
                {
                    "name": group.name,
                    "state": group.state.value,
                    "message": group.message,
                    "members": [
                        {
                            "name": m.name,
                            "state": m.state.value,
                            "message": m.message,
                            "startTime": when(m.start_time),
                            "completedTime": when(m.completed_time),
                        }
                        for m in group.members
                    ],
                }
                for group in stage.groups
            ],
        }
        for stage in status.stages
    ]


@dataclass
class RehearsalResult:
    """The report, and what the CLI needs to say around it."""

    report: dict[str, Any]
    status: RunStatus
    ui_url: str | None
    notes: list[str]
    #: What ``--html`` draws: the report's run with every member's steps.
    timeline: Timeline | None = None

    @property
    def state(self) -> State:
        return self.status.state

    @property
    def exit_code(self) -> int:
        """0 when the run Completed, 1 when it Failed or Stopped."""
        return 0 if self.status.state is State.COMPLETED else 1


async def keep_gates_moving(
    handle: UpdateRunHandle, rehearsal: Rehearsal, events: RehearsalEvents, address: str
) -> None:
    """Open ScheduledStart gates at once; approve Approval gates (``approve_all``) or say how."""
    seen: set[str] = set()
    pending: set[asyncio.Task[None]] = set()

    async def approve(gate_id: str, delay: float, comment: str) -> None:
        await asyncio.sleep(delay)
        with contextlib.suppress(MeshfleetError):  # the run moved on (stopped, skipped)
            await handle.approve(gate_id, comment, identity="meshfleet simulate")
            events.note(f"approved gate {gate_id}")

    try:
        while True:
            status = await handle.status()
            if status.state.finished and status.state is not State.NOT_STARTED:
                return
            for gate in status.gates():
                if gate.state is not GateState.PENDING or gate.id in seen:
                    continue
                seen.add(gate.id)
                if gate.kind is GateKind.SCHEDULED_START:
                    task = asyncio.create_task(
                        approve(gate.id, 0, "rehearsal: time is compressed, opened at once")
                    )
                elif gate.kind is GateKind.APPROVAL and rehearsal.approve_all:
                    events.note(
                        f"gate {gate.id} ({gate.display_name}) is waiting; approving in "
                        f"{rehearsal.approve_after.total_seconds():g}s (--approve-all)"
                    )
                    task = asyncio.create_task(
                        approve(
                            gate.id,
                            rehearsal.approve_after.total_seconds(),
                            "approved by the rehearsal (--approve-all)",
                        )
                    )
                else:
                    command = f"meshfleet --address {address} run approve {handle.ref} {gate.id}"
                    events.gate_waiting(gate.id, gate.display_name, command)
                    continue
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.sleep(GATE_POLL_INTERVAL.total_seconds())
    finally:
        for task in pending:
            task.cancel()


#: Shows the run while it goes and returns its final status (live view, lines, or nothing).
Observer = Callable[[UpdateRunHandle], Awaitable[RunStatus]]
#: Called with the finished result while the server and worker are still up (the demo
#: keeps them up for inspection there).
Afterwards = Callable[["RehearsalResult"], Awaitable[None]]


async def rehearse(
    rehearsal: Rehearsal,
    settings: ConnectionSettings,
    state_dir: Path,
    *,
    observe: Observer,
    events: RehearsalEvents | None = None,
    afterwards: Afterwards | None = None,
) -> RehearsalResult:
    """Run the whole rehearsal and return its report (see the module docstring)."""
    events = events or RehearsalEvents()
    place = await open_place(settings, state_dir)
    try:
        if place.embedded is not None:
            events.note(f"started a private Temporal server at {place.address}")
        if place.ui_url:
            events.note(f"Web UI: {place.ui_url} (this command's private server: up while it runs)")
        if place.embedded is None:
            # A shared server may hold a network of that name (even a real one): never touch it.
            rehearsal = _renamed(rehearsal, f"{rehearsal.network[:50]}-sim-{uuid.uuid4().hex[:6]}")
        world_dir = (place.private_dir or state_dir / "simulate") / f"world-{uuid.uuid4().hex[:8]}"
        # The rehearsal's world is private to this process: store it at most once a second.
        backend = SimulatedFleetBackend(world_dir, write_behind=1.0)
        await asyncio.to_thread(backend.load, rehearsal.fleet, reset=True)
        queue = f"meshfleet-simulate-{uuid.uuid4().hex[:8]}"
        client = MeshfleetClient(place.client, task_queue=queue)
        try:
            async with build_worker(place.client, queue, backend=backend):
                result = await _run(rehearsal, place, client, backend, observe, events)
                if afterwards is not None:
                    await afterwards(result)
        finally:
            if place.embedded is None:
                await _clean_up_configured(place.client, rehearsal)
                shutil.rmtree(world_dir, ignore_errors=True)
        return result
    finally:
        place.close()


def _renamed(rehearsal: Rehearsal, network: str) -> Rehearsal:
    """The same rehearsal with its network under another name (in the fleet file too)."""
    fleet = rehearsal.fleet
    networks = [
        n.model_copy(update={"name": network}) if n.name == rehearsal.network else n
        for n in fleet.spec.networks
    ]
    spec = fleet.spec.model_copy(update={"networks": networks})
    return dataclasses.replace(
        rehearsal, network=network, fleet=fleet.model_copy(update={"spec": spec})
    )


async def _run(
    rehearsal: Rehearsal,
    place: Place,
    client: MeshfleetClient,
    backend: SimulatedFleetBackend,
    observe: Observer,
    events: RehearsalEvents,
) -> RehearsalResult:
    joined = await client.create_network(
        rehearsal.network,
        rehearsal.members,
        settings=NetworkSettings(mesh_ready_timeout=dt.timedelta(minutes=10)),
    )
    left_out = [m for m in (joined.members if joined else []) if m.outcome.value != "joined"]
    if left_out:
        # The fleet breaks a membership rule: the rehearsal of this network is meaningless.
        raise InvalidInputError(
            [
                FieldError(
                    path=member.cluster,
                    message=f"did not join network {rehearsal.network} ({member.outcome.value}): "
                    + (member.message or (member.rule.value if member.rule else "no reason")),
                )
                for member in left_out
            ]
        )
    events.note(f"network {rehearsal.network}: {len(rehearsal.members)} members")
    spec = RunSpec(
        name=rehearsal.run_name,
        network=rehearsal.network,
        kubernetes_version=str(rehearsal.target),
        strategy=rehearsal.strategy,
    )
    handle = await client.start_update_run(spec, timings=rehearsal.timings)
    run_url = workflow_url(place.ui_url, place.namespace, handle.workflow_id)
    events.note(f"update run {handle.ref} started" + (f": {run_url}" if run_url else ""))
    gates = asyncio.create_task(keep_gates_moving(handle, rehearsal, events, place.address))
    try:
        final = await observe(handle)
    finally:
        gates.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gates
    # The run closes shortly after it ends (REHEARSAL_TIMINGS.linger): count its whole history.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(
            place.client.get_workflow_handle(handle.workflow_id).result(), timeout=30
        )
    history = await count_history(place.client, final)
    audit = await asyncio.to_thread(backend.audit)
    violations = await asyncio.to_thread(backend.violations)
    target = final.target
    report: dict[str, Any] = {
        "runId": final.run_id,
        "state": final.state.value,
        "target": {
            "kubernetesVersion": target.kubernetes_version if target else str(rehearsal.target),
            "ciliumVersion": target.cilium_version if target else None,
        },
        "plan": {**rehearsal.plan.to_json_dict(), "undrainable": rehearsal.undrainable},
        "status": status_tree(final),
        "audit": [entry.to_json_dict() for entry in audit],
        "violations": [v.to_json_dict() for v in violations],
        "history": history.to_json_dict(),
        "uiUrl": run_url,
    }
    timeline = rehearsal_timeline(
        final,
        history.member_steps,
        fleet=rehearsal.fleet,
        members=rehearsal.members,
        report=report,
        time_scale=rehearsal.time_scale,
        notes=rehearsal.notes,
    )
    return RehearsalResult(
        report=report, status=final, ui_url=run_url, notes=rehearsal.notes, timeline=timeline
    )


async def _clean_up_configured(client: Client, rehearsal: Rehearsal) -> None:
    """On a shared server, end the rehearsal's network: no worker will serve it again."""
    with contextlib.suppress(Exception):
        await client.get_workflow_handle(network_workflow_id(rehearsal.network)).terminate(
            reason="meshfleet simulate: the rehearsal is over"
        )
