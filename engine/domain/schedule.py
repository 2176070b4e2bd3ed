"""Scheduled maintenance: the fleet-level window and auto-upgrade profiles (data only).

A ``FleetWindow`` is a calendar (days of week, a start time in an IANA time
zone, skip dates) plus a duration. It is what a profile's Temporal Schedule
fires on, and what an update run started by that schedule carries so that no
new member starts after the window's end. The math lives in
``strategies.fleet_windows``.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Annotated

from pydantic import AfterValidator, Field, field_validator

from engine.domain.model import DomainModel
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
        if isinstance(value, list):
            return [parse_day(item) if isinstance(item, str) else item for item in value]
        return value

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
