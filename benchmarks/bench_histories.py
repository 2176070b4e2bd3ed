"""What the benchmark reads from histories: sizes, activity tasks, gates, transitions."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowHistory

    from engine.domain.run import RunStatus


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
    #: Bytes of each workflow's events (every run of its chain), by workflow id.
    sizes: dict[str, int]
    #: Bytes of the child-start events among them (what starting members stores).
    child_start_bytes: int
    #: When each workflow's chain closed (its last event; seconds since the epoch), by id.
    closed_at: dict[str, float]


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
    sizes = {
        workflow_id: sum(e.ByteSize() for h in chain for e in h.events)
        for workflow_id, chain in zip(workflow_ids, chains, strict=True)
    }
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
        sizes=sizes,
        child_start_bytes=sum(
            e.ByteSize()
            for h in runs
            for e in h.events
            if e.HasField("start_child_workflow_execution_initiated_event_attributes")
        ),
        closed_at={
            workflow_id: _seconds(chain[-1].events[-1])
            for workflow_id, chain in zip(workflow_ids, chains, strict=True)
        },
    )


def _seconds(event: Any) -> float:
    """The event's time, in seconds since the epoch (the server's clock)."""
    return float(event.event_time.ToDatetime(tzinfo=dt.UTC).timestamp())


Interval = tuple[dt.datetime, dt.datetime]

#: Timers of the run that belong to a gate: their summaries start so (workflows/update_run.py).
GATE_TIMER_SUMMARIES = ("soak after stage ", "gate ")
#: The summary of a run's linger timer: its work is done and its network released, and it
#: stays open for resume and retry (``timings.linger``; workflows/update_run.py).
LINGER_SUMMARY = "open for resume and retry"


@dataclass
class RunTimes:
    """What one read of a run's history says about where its time went."""

    #: When the run was in a gate or a soak: merged, in order.
    gates: list[Interval]
    #: When its work ended (seconds since the epoch, the server's clock): when it began to
    #: linger, every member done and the network released.
    work_ended: float


async def run_times(client: Client, workflow_id: str) -> RunTimes:
    """The run's gates and the end of its work, from its history.

    A gate activity counts from its scheduled event to its closing one (all its
    attempts); a soak or ScheduledStart timer from its start to its firing or
    cancellation. The work ends where the linger timer starts: the linger (1 ms in the
    benchmark) is a timer the dev server fires about a second late, which no run's user
    waits for (``run watch`` and ``RunHandle.result()`` end at the run's final status).
    A run without that timer is an error: its summary has changed.
    """
    from engine.domain.run import CHECK_MESH_HEALTH, SERVICE_ENDPOINTS

    gates = {CHECK_MESH_HEALTH, SERVICE_ENDPOINTS}
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    converter = client.data_converter.payload_converter
    opened: dict[int, dt.datetime] = {}
    found: list[Interval] = []
    work_ended: float | None = None
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
            elif text == LINGER_SUMMARY and work_ended is None:
                work_ended = at.timestamp()
        else:
            opening = _opening_event(event)
            if opening in opened:
                found.append((opened.pop(opening), at))
    if work_ended is None:
        raise RuntimeError(f"no timer {LINGER_SUMMARY!r} in the history of {workflow_id}")
    return RunTimes(gates=merge(found), work_ended=work_ended)


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

    ``excluded`` (merged, as ``run_times`` returns them): time taken out of each window.
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
