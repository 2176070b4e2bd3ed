"""Scheduled maintenance: the fleet-level window and auto-upgrade profiles (data only).

A ``FleetWindow`` is a calendar (days of week, a start time in an IANA time
zone, skip dates) plus a duration. It is what a profile's Temporal Schedule
fires on, and what an update run started by that schedule carries so that no
new member starts after the window's end. The math lives in
``strategies.fleet_windows``.
"""

from __future__ import annotations

import datetime as dt
import enum
import zoneinfo
from typing import Annotated

from pydantic import AfterValidator, Field, field_validator, model_validator

from engine.domain.model import DomainModel
from engine.domain.names import ResourceNameStr
from engine.domain.strategy import UpdateStrategy
from engine.domain.versions import Version
from engine.domain.windows import DayOfWeek, TimeOfDay


def _time_zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(
            f"{value!r} is not an IANA time zone (e.g. 'Europe/Berlin', 'UTC')"
        ) from error
    return value


#: A pydantic field type: an IANA time zone name that ``zoneinfo`` knows.
TimeZoneName = Annotated[str, AfterValidator(_time_zone)]

_DAY_ABBREVIATIONS = {day.value[:3].lower(): day for day in DayOfWeek}


def parse_day(text: str) -> DayOfWeek:
    """'Sat', 'sat', 'Saturday' -> DayOfWeek.SATURDAY; ValueError otherwise."""
    key = text.strip().lower()
    for day in DayOfWeek:
        if key == day.value.lower():
            return day
    if key in _DAY_ABBREVIATIONS:
        return _DAY_ABBREVIATIONS[key]
    names = ", ".join(day.value[:3] for day in DayOfWeek)
    raise ValueError(f"{text!r} is not a day of the week ({names})")


class FleetWindow(DomainModel):
    """A fleet-level maintenance window as a calendar in a real time zone.

    An occurrence starts on each of ``days`` at ``startTime`` local time in
    ``timeZone`` and lasts ``durationHours`` of elapsed time; none starts on a
    ``skipDates`` date (a local date). Occurrences that touch or overlap form
    one opening. Unlike a member's ``MaintenanceWindow`` (a fixed UTC offset),
    this follows daylight saving time, as the Temporal Schedule does.
    """

    days: list[DayOfWeek] = Field(min_length=1)
    start_time: TimeOfDay
    time_zone: TimeZoneName = "UTC"
    skip_dates: list[dt.date] = Field(default_factory=list)
    duration_hours: int = Field(ge=1, le=24)

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, value: object) -> object:
        # Accept 'Sat' as well as 'Saturday', as the CLI does.
        if not isinstance(value, list):
            return value
        days: list[object] = []
        bad: list[str] = []
        for item in value:
            try:
                days.append(parse_day(item) if isinstance(item, str) else item)
            except ValueError:
                bad.append(repr(item))
        if bad:  # every bad day at once, not the first
            names = ", ".join(day.value[:3] for day in DayOfWeek)
            raise ValueError(f"{', '.join(bad)} not a day of the week ({names})")
        return days

    @field_validator("days", mode="after")
    @classmethod
    def _unique_days(cls, value: list[DayOfWeek]) -> list[DayOfWeek]:
        return sorted(set(value), key=lambda day: day.weekday)

    @field_validator("skip_dates", mode="after")
    @classmethod
    def _sorted_dates(cls, value: list[dt.date]) -> list[dt.date]:
        return sorted(set(value))

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        """The window's time zone."""
        return zoneinfo.ZoneInfo(self.time_zone)


# --- auto-upgrade profiles ------------------------------------------------------------------

#: The workflow a profile's schedule starts, and its activities (called by name).
AUTO_UPGRADE_WORKFLOW = "AutoUpgrade"
READ_AUTO_UPGRADE_FACTS = "read_auto_upgrade_facts"
START_AUTO_UPGRADE_RUN = "start_auto_upgrade_run"

#: Schedule ids and the ids of the workflows they start are readable in the Web UI.
SCHEDULE_ID_PREFIX = "autoupgrade/"
#: The schedule's memo key holding the profile as written.
PROFILE_MEMO = "meshfleetProfile"
#: Runs are named ``auto-<profile>-<major>-<minor>``: the profile name leaves room for it.
PROFILE_NAME_MAX = 38
#: The display name of the gate a run waits at when the profile does not start it.
START_GATE_NAME = "start"


def schedule_id(profile: str) -> str:
    """``autoupgrade/<profile>``: the profile's Temporal Schedule."""
    return f"{SCHEDULE_ID_PREFIX}{profile}"


def trigger_workflow_id(profile: str) -> str:
    """The base id of the workflows the schedule starts (Temporal appends the time)."""
    return f"{SCHEDULE_ID_PREFIX}{profile}/trigger"


def auto_run_name(profile: str, target: str) -> str:
    """The run a profile creates for ``target``: the same name on every trigger, so no duplicate."""
    return f"auto-{profile}-{target.replace('.', '-')}"


class Channel(str, enum.Enum):
    """Which Kubernetes version a profile upgrades to (Fleet's auto-upgrade channels)."""

    #: The newest patch of the minor one below the newest in the release catalog (N-1).
    STABLE = "Stable"
    #: The newest release in the catalog (N).
    RAPID = "Rapid"
    #: The newest patch of each member's current minor.
    PATCH = "Patch"
    #: ``targetKubernetesVersion``.
    TARGET_KUBERNETES_VERSION = "TargetKubernetesVersion"


def _minor(value: str) -> str:
    version = Version.parse(value)
    if version.patch is not None:
        raise ValueError("must be a minor version like '1.34' (the catalog lists minors)")
    return str(version)


MinorStr = Annotated[str, AfterValidator(_minor)]


def _profile_name(value: str) -> str:
    if len(value) > PROFILE_NAME_MAX:
        raise ValueError(
            f"must be at most {PROFILE_NAME_MAX} characters (run names "
            f"'auto-<profile>-1-34' must fit in 50); got {len(value)}"
        )
    return value


class AutoUpgradeProfile(DomainModel):
    """A network's scheduled maintenance: what to upgrade to, in which order, and when.

    Each profile is a Temporal Schedule (``autoupgrade/<name>``) firing at
    the window's openings; ``disabled`` creates it paused.
    """

    name: Annotated[ResourceNameStr, AfterValidator(_profile_name)]
    network: ResourceNameStr
    strategy: UpdateStrategy
    channel: Channel
    target_kubernetes_version: MinorStr | None = None
    window: FleetWindow
    #: False: create the run and leave it waiting at an Approval gate named ``start``.
    start_run: bool = True
    disabled: bool = False

    @model_validator(mode="after")
    def _target_matches_channel(self) -> AutoUpgradeProfile:
        wants_target = self.channel is Channel.TARGET_KUBERNETES_VERSION
        if wants_target and self.target_kubernetes_version is None:
            raise ValueError("channel TargetKubernetesVersion needs targetKubernetesVersion")
        if not wants_target and self.target_kubernetes_version is not None:
            raise ValueError(
                f"targetKubernetesVersion is only for channel TargetKubernetesVersion "
                f"(channel is {self.channel.value})"
            )
        return self


class TriggerStatus(str, enum.Enum):
    """How a trigger ended (Fleet's ``lastTriggerStatus``)."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    NOTHING_TO_DO = "NothingToDo"


class MemberTarget(DomainModel):
    """One member's version and where the channel takes it on this trigger."""

    name: str
    kubernetes_version: str
    #: None when the member is current for the channel.
    target: str | None = None


class AutoUpgradeInput(DomainModel):
    """What a schedule's action passes to the auto-upgrade workflow (one model, as always)."""

    profile: AutoUpgradeProfile


class AutoUpgradeFacts(DomainModel):
    """What a trigger decides on: the members' versions and the release catalog."""

    members: list[MemberTarget]
    catalog: dict[str, object]


class StartAutoUpgradeRun(DomainModel):
    """Create (or find) the profile's run to ``target``."""

    profile: AutoUpgradeProfile
    target: str
    run: str


class AutoUpgradeRunRef(DomainModel):
    """The run a trigger created, or the one an earlier trigger created for the same target."""

    network: str
    run: str
    created: bool
    state: str | None = None


class TriggerResult(DomainModel):
    """One trigger's outcome: the auto-upgrade workflow's result (kept by Temporal)."""

    profile: str
    network: str
    triggered_at: dt.datetime
    status: TriggerStatus
    error: str | None = None
    upgrade_versions: list[str] = Field(default_factory=list)
    run: AutoUpgradeRunRef | None = None
    members: list[MemberTarget] = Field(default_factory=list)
    message: str | None = None


class ProfileStatus(DomainModel):
    """A profile as ``schedule show`` and ``schedule list`` report it."""

    profile: AutoUpgradeProfile
    schedule_id: str
    paused: bool
    note: str | None = None
    next_action_times: list[dt.datetime] = Field(default_factory=list)
    #: Runs of the auto-upgrade workflow the schedule has started (manual triggers included).
    trigger_count: int = 0
    trigger_running: bool = False
    last_triggered_at: dt.datetime | None = None
    last_trigger_status: TriggerStatus | None = None
    last_trigger_error: str | None = None
    last_trigger_upgrade_versions: list[str] = Field(default_factory=list)
    last_run: AutoUpgradeRunRef | None = None
