"""Maintenance windows in the AKS planned-maintenance schema (data only).

The math ("is it open at t", "when does it next open") lives in
``strategies.windows``; this module only says what a window *is*.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from engine.domain.model import DomainModel

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_OFFSET = re.compile(r"^([+-])(\d{2}):([0-5]\d)$")


def _hhmm(value: str) -> str:
    if not _HHMM.match(value):
        raise ValueError("must be a time of day 'HH:mm' (00:00 to 23:59)")
    return value


def _utc_offset(value: str) -> str:
    match = _OFFSET.match(value)
    if not match:
        raise ValueError("must be a UTC offset '+HH:mm' or '-HH:mm'")
    _sign, hours, minutes = match.groups()
    total = int(hours) * 60 + int(minutes)
    if total > 14 * 60:
        raise ValueError("must be within -14:00 and +14:00")
    return value


TimeOfDay = Annotated[str, AfterValidator(_hhmm)]
UtcOffset = Annotated[str, AfterValidator(_utc_offset)]


def parse_utc_offset(value: str) -> dt.timezone:
    """'+01:00' -> a fixed-offset timezone."""
    match = _OFFSET.match(_utc_offset(value))
    assert match is not None
    sign, hours, minutes = match.groups()
    delta = dt.timedelta(hours=int(hours), minutes=int(minutes))
    return dt.timezone(-delta if sign == "-" else delta)


def parse_time_of_day(value: str) -> dt.time:
    """'02:30' -> time(2, 30)."""
    hours, minutes = _hhmm(value).split(":")
    return dt.time(int(hours), int(minutes))


class DayOfWeek(str, enum.Enum):
    """Days as AKS and Fleet spell them."""

    MONDAY = "Monday"
    TUESDAY = "Tuesday"
    WEDNESDAY = "Wednesday"
    THURSDAY = "Thursday"
    FRIDAY = "Friday"
    SATURDAY = "Saturday"
    SUNDAY = "Sunday"

    @property
    def weekday(self) -> int:
        """Python's weekday number (Monday is 0)."""
        return list(DayOfWeek).index(self)


class WeekIndex(str, enum.Enum):
    FIRST = "First"
    SECOND = "Second"
    THIRD = "Third"
    FOURTH = "Fourth"
    LAST = "Last"


class DailySchedule(DomainModel):
    interval_days: int = Field(default=1, ge=1, le=7)


class WeeklySchedule(DomainModel):
    interval_weeks: int = Field(default=1, ge=1, le=4)
    day_of_week: DayOfWeek


class AbsoluteMonthlySchedule(DomainModel):
    interval_months: int = Field(default=1, ge=1, le=6)
    day_of_month: int = Field(ge=1, le=31)


class RelativeMonthlySchedule(DomainModel):
    interval_months: int = Field(default=1, ge=1, le=6)
    day_of_week: DayOfWeek
    week_index: WeekIndex


class Schedule(DomainModel):
    """Exactly one of the four AKS schedule kinds."""

    daily: DailySchedule | None = None
    weekly: WeeklySchedule | None = None
    absolute_monthly: AbsoluteMonthlySchedule | None = None
    relative_monthly: RelativeMonthlySchedule | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Schedule:
        chosen = [
            name
            for name in ("daily", "weekly", "absolute_monthly", "relative_monthly")
            if getattr(self, name) is not None
        ]
        if len(chosen) != 1:
            raise ValueError(
                "exactly one of daily, weekly, absoluteMonthly, relativeMonthly must be set"
                f" (got {len(chosen)})"
            )
        return self


class DateSpan(DomainModel):
    """A closed span of dates (both ends included) on which the window never opens."""

    start: dt.date
    end: dt.date

    @model_validator(mode="after")
    def _ordered(self) -> DateSpan:
        if self.end < self.start:
            raise ValueError("end must not be before start")
        return self


class MaintenanceWindow(DomainModel):
    """When a member may be upgraded (AKS ``maintenanceWindow``)."""

    schedule: Schedule
    duration_hours: int = Field(ge=4, le=24)
    utc_offset: UtcOffset = "+00:00"
    start_date: dt.date | None = None
    start_time: TimeOfDay = "00:00"
    not_allowed_dates: list[DateSpan] = Field(default_factory=list)
