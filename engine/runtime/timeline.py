"""Where the picture's data comes from: a run's status, its histories, a rehearsal's report.

``engine.runtime.report_html`` draws a :class:`~engine.runtime.report_html.Timeline`;
this module builds one:

- every member's steps come from its member workflow's history: each step is
  one activity (``preflight_member`` ... ``restore_member``), drawn from the
  time it was scheduled to the time it closed, failed when it failed or timed out;
- stages, gates and soaks come from the run's status (gate ``completedAt``, the
  soak's ``until`` and length; a gate is drawn from the moment it could open);
- a rehearsal's global services come from its fleet file (endpoints per cluster,
  minimum) and the simulator's audit (drains and restores of each service, the
  continuity violations); a real run's come from the baseline the run measured
  and what each member's drain recorded (its endpoints, gone while it was drained).

Reading histories and writing the file are I/O (:func:`fetch_member_histories`,
:func:`run_timeline`, :func:`write_html`); the rest is pure and works on data
already fetched.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from temporalio.api.common.v1 import Payloads
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.service import RPCError

from engine.domain import run as contract
from engine.domain.durations import parse_duration
from engine.domain.errors import FieldError
from engine.domain.fleet import SimulatedFleet
from engine.domain.run import (
    DrainRecord,
    GateState,
    GateStatus,
    RunStatus,
    ServiceEndpointsResult,
    State,
    UpdateRunInput,
    member_workflow_id,
    run_workflow_id,
)
from engine.domain.strategy import HealthSpec
from engine.runtime.report_html import (
    Interval,
    MemberRow,
    ServiceSeries,
    StepSpan,
    Timeline,
    Violation,
    render_html,
)

log = structlog.get_logger(__name__)

#: The activities whose result is the drain's record (annotating returns it).
_DRAIN_RECORDS = {contract.DRAIN, contract.DRAIN_ANNOTATE}
#: At most this many history fetches at once.
FETCH_CONCURRENCY = 16

#: How an activity closed, and whether that is a failure (a cancelled step did not fail).
_CLOSED = {
    "activity_task_completed_event_attributes": False,
    "activity_task_failed_event_attributes": True,
    "activity_task_timed_out_event_attributes": True,
    "activity_task_canceled_event_attributes": False,
}


def _time(event: HistoryEvent) -> dt.datetime:
    return event.event_time.ToDatetime(tzinfo=dt.UTC)


@dataclass
class MemberHistory:
    """What one member's history says: its steps, and the drain's record when there was one."""

    steps: list[StepSpan] = field(default_factory=list)
    #: The completed drain's result payloads (decoded by the caller that needs them).
    drain_result: Payloads | None = None


def member_history(events: Iterable[HistoryEvent]) -> MemberHistory:
    """The steps of one member workflow's history, in the order they were scheduled."""
    scheduled: dict[int, tuple[str, dt.datetime]] = {}
    records: set[int] = set()
    closed: dict[int, tuple[dt.datetime, bool, str | None, Payloads | None]] = {}
    for event in events:
        kind = event.WhichOneof("attributes")
        if kind == "activity_task_scheduled_event_attributes":
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            member_step = contract.STEP_OF_ACTIVITY.get(name)
            if member_step is not None:
                scheduled[event.event_id] = (member_step.value, _time(event))
            if name in _DRAIN_RECORDS:
                records.add(event.event_id)
        elif kind in _CLOSED:
            attributes = getattr(event, kind)
            has_failure = "failure" in attributes.DESCRIPTOR.fields_by_name
            message = (
                attributes.failure.message
                if has_failure and attributes.HasField("failure")
                else "cancelled"
                if kind == "activity_task_canceled_event_attributes"
                else None
            )
            result = (
                attributes.result
                if kind == "activity_task_completed_event_attributes"
                and attributes.HasField("result")
                else None
            )
            closed[attributes.scheduled_event_id] = (_time(event), _CLOSED[kind], message, result)
    found = MemberHistory()
    for event_id, (step, start) in sorted(scheduled.items()):
        end, failed, message, result = closed.get(event_id, (None, False, None, None))
        span = StepSpan(step=step, start=start, end=end, failed=failed, message=message)
        previous = found.steps[-1] if found.steps else None
        if previous is not None and previous.step == step and previous.end is not None:
            # Annotating then waiting for the peers: one step on the picture.
            found.steps[-1] = dataclasses.replace(
                previous,
                end=end,
                failed=previous.failed or failed,
                message=message if failed else previous.message,
            )
        else:
            found.steps.append(span)
        if event_id in records and result is not None:
            found.drain_result = result
    return found


def member_steps(events: Iterable[HistoryEvent]) -> list[StepSpan]:
    """Only the steps of a member's history (see :func:`member_history`)."""
    return member_history(events).steps


async def _attempt_runs(client: Client, workflow_id: str) -> list[str]:
    """The run ids of every attempt of a member (a retry starts it again under its id).

    Empty when the server cannot list them (then only the latest attempt is drawn).
    """
    try:
        found = [
            (execution.start_time, execution.run_id)
            async for execution in client.list_workflows(f'WorkflowId = "{workflow_id}"')
        ]
    except RPCError as error:
        log.warning("timeline.attempts_unlisted", workflow_id=workflow_id, error=str(error))
        return []
    return [run_id for _, run_id in sorted(found)]


async def fetch_member_histories(
    client: Client, status: RunStatus
) -> dict[str, list[MemberHistory]]:
    """Every started member's histories, one per attempt, oldest first, through the client.

    A member tried once is read by its workflow id alone; a retried one's
    earlier attempts are found by listing its workflow id (the Web UI's
    visibility store), so a failure a retry fixed stays on the picture.
    """
    limit = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def one(name: str, attempts: int) -> tuple[str, list[MemberHistory]]:
        workflow_id = member_workflow_id(status.network, status.run_id, name)
        async with limit:
            runs: list[str | None] = [None]
            if attempts > 1:
                runs = list(await _attempt_runs(client, workflow_id)) or [None]
            found = []
            for run_id in runs:
                handle = client.get_workflow_handle(workflow_id, run_id=run_id)
                found.append(member_history((await handle.fetch_history()).events))
        return name, found

    started = [(m.name, m.attempts) for _, _, m in status.members() if m.attempts > 0]
    return dict(await asyncio.gather(*(one(name, attempts) for name, attempts in started)))


def numbered(attempts: Sequence[MemberHistory]) -> list[StepSpan]:
    """The steps of every attempt in one list, each marked with its attempt (from 1)."""
    return [
        dataclasses.replace(step, attempt=index)
        for index, history in enumerate(attempts, start=1)
        for step in history.steps
    ]


# --- from the status ----------------------------------------------------------------------


def _gate_chain(
    gates: Sequence[GateStatus], ready: dt.datetime | None, stage: str, group: str | None
) -> tuple[list[Interval], dt.datetime | None]:
    """Gates wait one after the other, each from when the one before it opened."""
    found: list[Interval] = []
    for gate in gates:
        if gate.state is GateState.NOT_STARTED or ready is None:
            continue
        if gate.state is GateState.SKIPPED and gate.completed_at is None:
            continue
        end = gate.completed_at
        label = f"{gate.kind.value} gate {gate.display_name}"
        found.append(Interval("gate", label, stage, group, ready, end, gate.state.value))
        ready = end
    return found, ready


def intervals_of(status: RunStatus) -> list[Interval]:
    """Every gate that waited and every soak that ran, from the run's status."""
    found: list[Interval] = []
    for stage in status.stages:
        before, opened = _gate_chain(stage.before_gates, stage.start_time, stage.name, None)
        found += before
        for group in stage.groups:
            found += _gate_chain(group.before_gates, opened, stage.name, group.name)[0]
            ends = [m.completed_time for m in group.members if m.completed_time]
            found += _gate_chain(
                group.after_gates, max(ends) if ends else None, stage.name, group.name
            )[0]
        ends = [m.completed_time for _, m in _members(stage) if m.completed_time]
        soaked: dt.datetime | None = max(ends) if ends else None
        wait = stage.after_stage_wait
        if wait is not None and wait.until is not None and wait.state is not State.NOT_STARTED:
            start = wait.until - dt.timedelta(seconds=wait.seconds)
            end = None if wait.state is State.RUNNING else min(wait.until, _last(stage, wait.until))
            label = f"soak after stage {stage.name}"
            found.append(Interval("soak", label, stage.name, None, start, end, wait.state.value))
            soaked = end or wait.until
        found += _gate_chain(stage.after_gates, soaked, stage.name, None)[0]
    return found


def _members(stage: Any) -> list[tuple[str, Any]]:
    return [(g.name, m) for g in stage.groups for m in g.members]


def _last(stage: Any, fallback: dt.datetime) -> dt.datetime:
    """A soak ends at its ``until``, or earlier when the stage ended first (failed, skipped)."""
    completed: dt.datetime | None = stage.completed_time
    return completed if completed is not None else fallback


def member_rows(status: RunStatus, steps: Mapping[str, Sequence[StepSpan]]) -> list[MemberRow]:
    """Every member of the plan, in plan order, with the steps its history shows."""
    return [
        MemberRow(
            name=m.name,
            stage=stage.name,
            group=group.name,
            state=m.state.value,
            message=m.message,
            start=m.start_time,
            end=m.completed_time,
            steps=list(steps.get(m.name, ())),
        )
        for stage, group, m in status.members()
    ]


def base_timeline(
    status: RunStatus,
    steps: Mapping[str, Sequence[StepSpan]],
    *,
    title: str,
    services: list[ServiceSeries],
    notes: Sequence[str] = (),
) -> Timeline:
    """The timeline every source shares: members, steps, gates and soaks from the status."""
    target = status.target
    return Timeline(
        title=title,
        network=status.network,
        run=status.name,
        state=status.state.value,
        target=(
            f"Kubernetes {target.kubernetes_version} (Cilium {target.cilium_version})"
            if target
            else "?"
        ),
        start=status.start_time,
        end=status.completed_time,
        stages=[s.name for s in status.stages],
        stage_states={s.name: s.state.value for s in status.stages},
        stage_messages={s.name: s.message for s in status.stages if s.message},
        members=member_rows(status, steps),
        intervals=intervals_of(status),
        services=services,
        notes=list(notes),
    )


# --- a rehearsal --------------------------------------------------------------------------


def _parse(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class _SimClock:
    """Simulated seconds to wall time, as the simulator maps them (``timeScale``)."""

    wall: dt.datetime
    sim: float
    scale: float

    def at(self, sim_time: float) -> dt.datetime:
        return self.wall + dt.timedelta(seconds=(sim_time - self.sim) * self.scale)


def _lost_endpoints(
    audit: Sequence[Mapping[str, Any]], clock: _SimClock | None
) -> list[tuple[str, str | None, dt.datetime, dt.datetime | None]]:
    """Each ``endpointsLost`` fault that fired: (cluster, service or every one, from, until)."""
    cleared = {
        (e["details"] or {}).get("id"): _parse(str(e["at"]))
        for e in audit
        if e["event"] == "faultInjected" and (e.get("details") or {}).get("action") == "cleared"
    }
    found: list[tuple[str, str | None, dt.datetime, dt.datetime | None]] = []
    for entry in audit:
        details = entry.get("details") or {}
        if entry["event"] != "faultInjected" or details.get("action") != "fired":
            continue
        if details.get("kind") != "endpointsLost" or entry.get("cluster") is None:
            continue
        began = _parse(str(entry["at"]))
        until = cleared.get(details.get("id"))
        if details.get("duration") and clock is not None:
            lasts = parse_duration(str(details["duration"])).total_seconds() * clock.scale
            ends = began + dt.timedelta(seconds=lasts)
            until = min(until, ends) if until else ends
        found.append((str(entry["cluster"]), details.get("service"), began, until))
    return found


def rehearsal_services(
    fleet: SimulatedFleet,
    members: Sequence[str],
    audit: Sequence[Mapping[str, Any]],
    violations: Sequence[Mapping[str, Any]],
    start: dt.datetime | None,
    time_scale: float,
) -> list[ServiceSeries]:
    """Each global service of the network: its endpoints, less those drained or lost.

    The counts are the fleet file's ready endpoints per cluster, summed over the
    clusters sharing the service; the simulator's audit says when each cluster's
    copy was drained and restored, and when an ``endpointsLost`` fault took a
    cluster's endpoints away; the violations are the simulator's own.
    """
    in_network = set(members)
    clock = (
        _SimClock(_parse(str(audit[0]["at"])), float(str(audit[0]["simTime"])), time_scale)
        if audit
        else None
    )
    first = start or (clock.wall if clock else dt.datetime.fromtimestamp(0, dt.UTC))
    lost = _lost_endpoints(audit, clock)
    found: list[ServiceSeries] = []
    for spec in fleet.spec.global_services:
        if not spec.namespace_global:
            continue  # not global in the mesh: no continuity to chart
        key = f"{spec.namespace}/{spec.name}"
        counts = {c: n for c, n in spec.clusters.items() if c in in_network}
        if not counts:
            continue
        # (when, cluster, why, gone?): a cluster's endpoints count unless drained or lost.
        changes: list[tuple[dt.datetime, str, str, bool]] = []
        for entry in audit:
            details = entry.get("details") or {}
            cluster = str(entry.get("cluster"))
            if cluster not in counts or details.get("service") != spec.name:
                continue
            if details.get("namespace") != spec.namespace:
                continue
            if entry["event"] in ("serviceDrained", "serviceRestored"):
                gone = entry["event"] == "serviceDrained"
                changes.append((_parse(str(entry["at"])), cluster, "drained", gone))
        for cluster, service, began, until in lost:
            if cluster not in counts or service not in (None, key):
                continue
            changes.append((began, cluster, "lost", True))
            if until is not None:
                changes.append((until, cluster, "lost", False))
        away: set[tuple[str, str]] = set()
        points = [(first, sum(counts.values()))]
        for when, cluster, why, gone in sorted(changes, key=lambda c: c[0]):
            if gone:
                away.add((cluster, why))
            else:
                away.discard((cluster, why))
            missing = {c for c, _ in away}
            value = sum(n for c, n in counts.items() if c not in missing)
            points.append((max(when, first), value))
        seen = [
            Violation(
                start=clock.at(float(v["started"])),
                end=clock.at(float(v["ended"])) if v.get("ended") is not None else None,
                viewpoint=str(v["viewpoint"]),
                ready=int(v["readyRoutable"]),
            )
            for v in violations
            if v.get("service") == key and clock is not None
        ]
        found.append(
            ServiceSeries(
                service=key,
                minimum=spec.min_ready_endpoints,
                points=points,
                violations=seen,
                source="fleet file endpoints, less those drained or lost (simulator audit)",
            )
        )
    return found


def rehearsal_timeline(
    status: RunStatus,
    steps: Mapping[str, Sequence[StepSpan]],
    *,
    fleet: SimulatedFleet,
    members: Sequence[str],
    report: Mapping[str, Any],
    time_scale: float,
    notes: Sequence[str] = (),
) -> Timeline:
    """The picture of a rehearsal: its status, member steps, and the simulator's audit."""
    services = rehearsal_services(
        fleet, members, report["audit"], report["violations"], status.start_time, time_scale
    )
    return base_timeline(
        status,
        steps,
        title=f"Rehearsal of {status.network}/{status.name}",
        services=services,
        notes=notes,
    )


# --- a real run ---------------------------------------------------------------------------


async def _decode(client: Client, payloads: Payloads, kind: type[Any]) -> Any:
    values = await client.data_converter.decode(payloads.payloads, [kind])
    return values[0] if values else None


async def _run_facts(client: Client, status: RunStatus) -> tuple[dict[str, int], int]:
    """The baseline the run measured (service -> ready endpoints) and its minimum."""
    workflow_id = run_workflow_id(status.network, status.run_id)
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    first_run = started.first_execution_run_id
    if started.continued_execution_run_id and first_run:
        handle = client.get_workflow_handle(workflow_id, run_id=first_run)
        history = await handle.fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
    run_input: UpdateRunInput = await _decode(client, started.input, UpdateRunInput)
    strategy = run_input.spec.strategy
    minimum = (strategy.spec.health if strategy else HealthSpec()).min_ready_endpoints
    scheduled = {
        e.event_id
        for e in history.events
        if e.WhichOneof("attributes") == "activity_task_scheduled_event_attributes"
        and e.activity_task_scheduled_event_attributes.activity_type.name
        == contract.SERVICE_ENDPOINTS
    }
    for event in history.events:
        if event.WhichOneof("attributes") != "activity_task_completed_event_attributes":
            continue
        attributes = event.activity_task_completed_event_attributes
        if attributes.scheduled_event_id in scheduled:
            result: ServiceEndpointsResult = await _decode(
                client, attributes.result, ServiceEndpointsResult
            )
            return dict(result.ready), minimum
    return {}, minimum


def drained_services(
    baseline: Mapping[str, int],
    minimum: int,
    drains: Sequence[tuple[DrainRecord, dt.datetime, dt.datetime | None]],
    start: dt.datetime | None,
) -> list[ServiceSeries]:
    """Each service's baseline, less each member's endpoints from its drain to its restore."""
    found: list[ServiceSeries] = []
    for key, total in sorted(baseline.items()):
        changes: list[tuple[dt.datetime, int]] = []
        for record, drained, restored in drains:
            count = record.ready_before.get(key, 0)
            if not count:
                continue
            changes.append((drained, -count))
            if restored is not None:
                changes.append((restored, count))
        points = [(start or min((t for t, _ in changes), default=dt.datetime.now(dt.UTC)), total)]
        value = total
        for when, delta in sorted(changes):
            value += delta
            points.append((when, value))
        found.append(
            ServiceSeries(
                service=key,
                minimum=minimum,
                points=points,
                source="the run's baseline, less each member's endpoints while drained",
            )
        )
    return found


async def run_timeline(client: Client, status: RunStatus) -> Timeline:
    """The picture of a real run, from its status and its workflows' histories."""
    histories = await fetch_member_histories(client, status)
    baseline, minimum = await _run_facts(client, status)
    drains: list[tuple[DrainRecord, dt.datetime, dt.datetime | None]] = []
    for found in (h for attempts in histories.values() for h in attempts):
        if found.drain_result is None:
            continue
        record: DrainRecord = await _decode(client, found.drain_result, DrainRecord)
        drain = next(s for s in found.steps if s.step == "Drain")
        restore = next((s for s in found.steps if s.step == "Restore"), None)
        drains.append((record, drain.start, restore.end if restore else None))
    return base_timeline(
        status,
        {name: numbered(attempts) for name, attempts in histories.items()},
        title=f"Update run {status.network}/{status.name}",
        services=drained_services(baseline, minimum, drains, status.start_time),
    )


# --- the file -----------------------------------------------------------------------------


def html_file_problem(path: Path, option: str = "--html") -> FieldError | None:
    """Why the picture could not be written at ``path`` (checked before any work starts)."""
    if path.is_dir():
        return FieldError(path=option, message=f"{path} is a directory; give a file name")
    parent = path.absolute().parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        return FieldError(path=option, message=f"{parent} is not a directory")
    if not os.access(existing, os.W_OK):
        return FieldError(path=option, message=f"{existing} is not writable")
    return None


def write_html(path: Path, timeline: Timeline) -> None:
    """Write the run's picture (creating the folder it goes in)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_html(timeline)
    path.write_text(text, encoding="utf-8")
    log.info(
        "timeline.written",
        path=str(path),
        network=timeline.network,
        run=timeline.run,
        members=len(timeline.members),
        bytes=len(text.encode()),
    )
