"""Auto-upgrade profiles as Temporal Schedules: create, show, list, pause, unpause, trigger, delete.

Each profile is one schedule, ``autoupgrade/<profile>``, visible (and
pausable, triggerable) in the Temporal Web UI and CLI. It fires at the
window's start, in the window's time zone (the server follows daylight
saving time), never on a skip date, with overlap policy SKIP; its action
starts the auto-upgrade workflow with the profile. meshfleet keeps no store
of its own: the profile is the schedule's memo, and the profile's status is
read from the schedule (paused, next action times) and from the result of
its latest finished trigger workflow.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleDescription,
    ScheduleHandle,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    WorkflowExecutionStatus,
    WorkflowFailureError,
)
from temporalio.service import RPCError, RPCStatusCode

from engine.domain.durations import parse_duration
from engine.domain.errors import (
    FieldError,
    InvalidInputError,
    MeshfleetError,
    NotFoundError,
    UnavailableError,
    field_errors_from_pydantic,
)
from engine.domain.network import network_workflow_id
from engine.domain.schedule import (
    AUTO_UPGRADE_WORKFLOW,
    PROFILE_MEMO,
    SCHEDULE_ID_PREFIX,
    AutoUpgradeInput,
    AutoUpgradeProfile,
    Channel,
    FleetWindow,
    ProfileStatus,
    TriggerResult,
    TriggerStatus,
    schedule_id,
    trigger_workflow_id,
)
from engine.domain.strategy import UpdateStrategy
from engine.domain.windows import parse_time_of_day
from strategies import default_strategy, load_strategy

#: A trigger that no worker picks up within this long times out, so the next firing
#: (overlap SKIP) is not blocked forever.
TRIGGER_TIMEOUT = dt.timedelta(hours=1)
#: How long ``trigger`` waits for the trigger's outcome.
TRIGGER_WAIT = dt.timedelta(seconds=60)
POLL = 0.2
_NOTE_CREATED_DISABLED = "disabled when created (meshfleet schedule unpause to enable)"


def temporal_day_of_week(weekday: int) -> int:
    """Python's weekday (Monday 0) -> the schedule's day of week (Sunday 0)."""
    return (weekday + 1) % 7


def schedule_spec(window: FleetWindow) -> ScheduleSpec:
    """When the window opens, as a calendar in its time zone, skip dates excluded."""
    start = parse_time_of_day(window.start_time)
    whole_day = {
        "hour": [ScheduleRange(0, 23)],
        "minute": [ScheduleRange(0, 59)],
        "second": [ScheduleRange(0, 59)],
    }
    return ScheduleSpec(
        calendars=[
            ScheduleCalendarSpec(
                day_of_week=[ScheduleRange(temporal_day_of_week(d.weekday)) for d in window.days],
                hour=[ScheduleRange(start.hour)],
                minute=[ScheduleRange(start.minute)],
                comment=f"window opens ({', '.join(d.value for d in window.days)} "
                f"{window.start_time} {window.time_zone}, {window.duration_hours} h)",
            )
        ],
        skip=[
            ScheduleCalendarSpec(
                year=[ScheduleRange(day.year)],
                month=[ScheduleRange(day.month)],
                day_of_month=[ScheduleRange(day.day)],
                comment=f"skip date {day.isoformat()}",
                **whole_day,
            )
            for day in window.skip_dates
        ],
        time_zone_name=window.time_zone,
    )


def build_schedule(profile: AutoUpgradeProfile, task_queue: str) -> Schedule:
    """The profile's schedule: fire at each opening, start the auto-upgrade workflow."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            AUTO_UPGRADE_WORKFLOW,
            AutoUpgradeInput(profile=profile),
            id=trigger_workflow_id(profile.name),
            task_queue=task_queue,
            execution_timeout=TRIGGER_TIMEOUT,
            static_summary=(
                f"auto-upgrade {profile.name}: network {profile.network}, "
                f"channel {profile.channel.value}"
            ),
        ),
        spec=schedule_spec(profile.window),
        policy=SchedulePolicy(
            overlap=ScheduleOverlapPolicy.SKIP,
            # A firing missed (server down) is worth catching up only while the window is open.
            catchup_window=dt.timedelta(hours=profile.window.duration_hours),
        ),
        state=ScheduleState(
            paused=profile.disabled, note=_NOTE_CREATED_DISABLED if profile.disabled else None
        ),
    )


def _problem(error: BaseException, name: str) -> MeshfleetError:
    if isinstance(error, RPCError) and error.status is RPCStatusCode.NOT_FOUND:
        return NotFoundError(f"schedule {name!r} does not exist")
    if isinstance(error, RPCError):
        return UnavailableError(f"Temporal answered {error.status.name}: {error.message}")
    return MeshfleetError(f"{type(error).__name__}: {error}")


async def create_profile(
    client: Client, task_queue: str, profile: AutoUpgradeProfile
) -> ProfileStatus:
    """Create the profile's schedule; the network must exist and the name be free."""
    try:
        await client.get_workflow_handle(network_workflow_id(profile.network)).describe()
    except RPCError as error:
        if error.status is RPCStatusCode.NOT_FOUND:
            raise InvalidInputError(
                [FieldError(path="network", message=f"network {profile.network!r} does not exist")]
            ) from None
        raise _problem(error, profile.name) from None
    try:
        await client.create_schedule(
            schedule_id(profile.name),
            build_schedule(profile, task_queue),
            memo={PROFILE_MEMO: profile.to_json_dict()},
        )
    except ScheduleAlreadyRunningError:
        raise InvalidInputError(
            [FieldError(path="name", message=f"a schedule {profile.name!r} already exists")]
        ) from None
    except RPCError as error:
        raise _problem(error, profile.name) from None
    return await describe_profile(client, profile.name)


def _handle(client: Client, name: str) -> ScheduleHandle:
    return client.get_schedule_handle(schedule_id(name))


async def _describe(client: Client, name: str) -> ScheduleDescription:
    try:
        return await _handle(client, name).describe()
    except RPCError as error:
        raise _problem(error, name) from None


async def _last_trigger(
    client: Client, description: ScheduleDescription
) -> tuple[dt.datetime | None, TriggerResult | None, str | None, bool]:
    """(when, result, error, running) of the newest trigger that finished."""
    running = bool(description.info.running_actions)
    for action in reversed(description.info.recent_actions):
        started = action.action
        if not isinstance(started, ScheduleActionExecutionStartWorkflow):
            continue
        handle = client.get_workflow_handle(
            started.workflow_id, run_id=started.first_execution_run_id, result_type=TriggerResult
        )
        try:
            described = await handle.describe()
        except RPCError:
            continue  # gone past the namespace's retention
        if described.status is WorkflowExecutionStatus.RUNNING:
            running = True
            continue
        if described.status is WorkflowExecutionStatus.COMPLETED:
            result = await handle.result()
            return action.started_at, result, None, running
        status = described.status.name.lower() if described.status else "unknown"
        action_spec = description.schedule.action
        queue = (
            action_spec.task_queue if isinstance(action_spec, ScheduleActionStartWorkflow) else "?"
        )
        message = f"the trigger workflow {status} (is a worker running on task queue {queue}?)"
        return action.started_at, None, message, running
    return None, None, None, running


async def _status(client: Client, description: ScheduleDescription) -> ProfileStatus:
    document = await description.memo_value(PROFILE_MEMO, None)
    if document is None:
        raise NotFoundError(f"schedule {description.id!r} holds no meshfleet profile")
    profile = AutoUpgradeProfile.model_validate(document)
    state = description.schedule.state
    when, result, error, running = await _last_trigger(client, description)
    status = ProfileStatus(
        profile=profile,
        schedule_id=description.id,
        paused=state.paused,
        note=state.note,
        # The server keeps computing times while paused; none of them fires.
        next_action_times=[] if state.paused else list(description.info.next_action_times),
        trigger_count=description.info.num_actions,
        trigger_running=running,
        last_triggered_at=when,
    )
    if result is not None:
        status.last_triggered_at = result.triggered_at
        status.last_trigger_status = result.status
        status.last_trigger_error = result.error
        status.last_trigger_upgrade_versions = result.upgrade_versions
        status.last_run = result.run
    elif error is not None:
        status.last_trigger_status = TriggerStatus.FAILED
        status.last_trigger_error = error
    return status


async def describe_profile(client: Client, name: str) -> ProfileStatus:
    """The profile, its schedule's state and next action times, and its last trigger."""
    return await _status(client, await _describe(client, name))


async def list_profiles(client: Client) -> list[ProfileStatus]:
    """Every profile (schedules named ``autoupgrade/...``), by name."""
    names: list[str] = []
    try:
        async for entry in await client.list_schedules():
            if entry.id.startswith(SCHEDULE_ID_PREFIX):
                names.append(entry.id.removeprefix(SCHEDULE_ID_PREFIX))
    except RPCError as error:
        raise _problem(error, "*") from None
    found: list[ProfileStatus] = []
    for name in sorted(names):
        try:
            found.append(await describe_profile(client, name))
        except NotFoundError:
            continue  # deleted since it was listed
    return found


async def pause_profile(client: Client, name: str, note: str | None = None) -> ProfileStatus:
    """Pause the schedule: it fires no more until unpaused (a manual trigger still runs)."""
    await _describe(client, name)
    await _handle(client, name).pause(note=note or "paused with meshfleet schedule pause")
    return await describe_profile(client, name)


async def unpause_profile(client: Client, name: str, note: str | None = None) -> ProfileStatus:
    """Unpause the schedule: it fires at the next opening."""
    await _describe(client, name)
    await _handle(client, name).unpause(note=note or "unpaused with meshfleet schedule unpause")
    return await describe_profile(client, name)


async def delete_profile(client: Client, name: str) -> None:
    """Delete the schedule (runs it created go on)."""
    await _describe(client, name)
    try:
        await _handle(client, name).delete()
    except RPCError as error:
        raise _problem(error, name) from None


async def trigger_profile(
    client: Client, name: str, *, wait: dt.timedelta = TRIGGER_WAIT
) -> ProfileStatus:
    """Fire the schedule now and wait (up to ``wait``) for that trigger's outcome.

    Overlap SKIP applies: while a trigger is still running, this one is dropped
    and the error says so. A paused schedule fires too (Temporal's rule for a
    manual trigger).
    """
    before = await _describe(client, name)
    await _handle(client, name).trigger()
    deadline = asyncio.get_running_loop().time() + wait.total_seconds()
    started: ScheduleActionExecutionStartWorkflow | None = None
    while started is None:
        now = await _describe(client, name)
        if now.info.num_actions_skipped_overlap > before.info.num_actions_skipped_overlap:
            raise MeshfleetError(
                f"schedule {name!r}: a trigger is still running; this one was skipped"
            )
        if now.info.num_actions > before.info.num_actions and now.info.recent_actions:
            action = now.info.recent_actions[-1].action
            if isinstance(action, ScheduleActionExecutionStartWorkflow):
                started = action
                break
        if asyncio.get_running_loop().time() > deadline:
            raise UnavailableError(f"schedule {name!r} did not start its trigger within {wait}")
        await asyncio.sleep(POLL)
    handle = client.get_workflow_handle(started.workflow_id, run_id=started.first_execution_run_id)
    try:
        await asyncio.wait_for(
            handle.result(), timeout=max(1.0, deadline - asyncio.get_running_loop().time())
        )
    except TimeoutError:
        raise UnavailableError(
            f"schedule {name!r}: trigger {started.workflow_id} has not finished within {wait} "
            "(is a worker running?)"
        ) from None
    except WorkflowFailureError:
        pass  # a trigger that did not complete shows up in the status below
    return await describe_profile(client, name)


# --- a profile from the CLI's options, every problem at once ---------------------------------

#: The ``schedule create`` option behind each profile field, for messages naming what was typed.
PROFILE_OPTIONS = {
    "name": "NAME",
    "network": "--network",
    "strategy": "--strategy",
    "channel": "--channel",
    "targetKubernetesVersion": "--target",
    "window.days": "--days",
    "window.startTime": "--start",
    "window.timeZone": "--timezone",
    "window.durationHours": "--duration",
    "window.skipDates": "--skip-date",
}


@dataclass(frozen=True)
class ProfileOptions:
    """``meshfleet schedule create``'s options, as typed (strings, not yet checked)."""

    name: str
    network: str
    strategy: Path
    channel: str
    days: str
    start: str
    duration: str
    target: str | None = None
    timezone: str = "UTC"
    skip_dates: Sequence[str] = field(default_factory=tuple)
    start_run: bool = True
    disabled: bool = False


def _option_path(path: str) -> str:
    """``window.timeZone`` -> ``--timezone (window.timeZone)``; skip dates keep their index."""
    base = path.split("[", 1)[0]
    option = PROFILE_OPTIONS.get(base)
    return f"{option} ({path})" if option else path


def _channel(text: str) -> Channel | str:
    for channel in Channel:
        if text.strip().lower() == channel.value.lower():
            return channel
    names = ", ".join(c.value for c in Channel)
    return f"{text!r} is not a channel ({names})"


def _duration_hours(text: str) -> int | str:
    try:
        delta = parse_duration(text)
    except ValueError as error:
        return str(error)
    hours, rest = divmod(delta, dt.timedelta(hours=1))
    if rest or not 1 <= hours <= 24:
        return f"{text!r}: must be whole hours from 1h to 24h"
    return int(hours)


def profile_from_options(options: ProfileOptions) -> AutoUpgradeProfile:
    """The profile the options describe, or one ``InvalidInputError`` listing every problem.

    Each option is checked on its own (a bad channel does not hide a bad time
    zone or a broken strategy file), like the file validators do.
    """
    problems: list[FieldError] = []

    def problem(path: str, message: str) -> None:
        problems.append(FieldError(path=_option_path(path), message=message))

    channel = _channel(options.channel)
    if not isinstance(channel, Channel):  # a Channel is a str too: ask for the enum
        problem("channel", channel)
    hours = _duration_hours(options.duration)
    if not isinstance(hours, int):
        problem("window.durationHours", hours)
    strategy: UpdateStrategy | None = None
    try:
        strategy = load_strategy(options.strategy)
    except InvalidInputError as error:
        where = f"{error.source}: " if error.source else ""
        problems += [
            FieldError(path=f"--strategy {where}{e.path}".rstrip(), message=e.message)
            for e in error.errors
        ]
    wants_target = channel is Channel.TARGET_KUBERNETES_VERSION
    if wants_target and not options.target:
        problem("targetKubernetesVersion", "channel TargetKubernetesVersion needs --target")
    if isinstance(channel, Channel) and not wants_target and options.target:
        problem(
            "targetKubernetesVersion",
            f"is only for channel TargetKubernetesVersion (channel is {channel.value})",
        )
    # Everything else through the model; what failed above gets a stand-in that passes.
    document: dict[str, Any] = {
        "name": options.name,
        "network": options.network,
        "strategy": strategy if strategy is not None else default_strategy(),
        "channel": channel if wants_target and options.target else Channel.RAPID,
        "targetKubernetesVersion": options.target if wants_target else None,
        "window": {
            "days": [d for d in options.days.split(",") if d.strip()],
            "startTime": options.start,
            "timeZone": options.timezone,
            "durationHours": hours if isinstance(hours, int) else 1,
            "skipDates": list(options.skip_dates),
        },
        "startRun": options.start_run,
        "disabled": options.disabled,
    }
    try:
        profile = AutoUpgradeProfile.model_validate(document)
    except ValidationError as error:
        problems += [
            FieldError(path=_option_path(e.path), message=e.message)
            for e in field_errors_from_pydantic(error)
        ]
    if problems:
        raise InvalidInputError(problems)
    # The stand-ins never survive: only options with no problem get here.
    assert isinstance(channel, Channel)
    return profile.model_copy(update={"channel": channel})
