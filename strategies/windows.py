"""Maintenance-window math over the AKS schema in ``engine.domain.windows``.

Every function takes and returns timezone-aware datetimes (results are in
UTC), never reads the clock, and is deterministic, so a workflow can call it
with ``workflow.now()``.

Semantics, where AKS leaves room:
- occurrences start at ``startTime`` in the window's ``utcOffset`` and last
  ``durationHours``; none starts before ``startDate``;
- interval counting (every N days, weeks or months) is anchored at
  ``startDate``, or at 1970-01-01 (its week: Monday 1969-12-29) without one;
- ``absoluteMonthly`` skips months that have no such day (no 31st in April);
- an occurrence that starts on a ``notAllowedDates`` date does not happen,
  and one that runs into such a date stops at its (local) midnight.
"""

from __future__ import annotations

import calendar
import datetime as dt
import enum
from collections.abc import Iterable, Iterator

from engine.domain.strategy import Gate, GateType
from engine.domain.windows import (
    MaintenanceWindow,
    WeekIndex,
    parse_time_of_day,
    parse_utc_offset,
)

_EPOCH = dt.date(1970, 1, 1)
#: How far ahead (beyond the last not-allowed date) to look for an opening.
_HORIZON = dt.timedelta(days=3 * 366)
_WEEK_INDEX = {
    WeekIndex.FIRST: 0,
    WeekIndex.SECOND: 1,
    WeekIndex.THIRD: 2,
    WeekIndex.FOURTH: 3,
}


def _aware(t: dt.datetime) -> dt.datetime:
    if t.tzinfo is None or t.tzinfo.utcoffset(t) is None:
        raise ValueError("the moment must be timezone-aware (use datetime.now(UTC))")
    return t


def _months_between(anchor: dt.date, day: dt.date) -> int:
    return (day.year - anchor.year) * 12 + day.month - anchor.month


def occurs_on(window: MaintenanceWindow, day: dt.date) -> bool:
    """Whether an occurrence of ``window`` starts on local date ``day`` (before exclusions)."""
    anchor = window.start_date or _EPOCH
    if window.start_date is not None and day < window.start_date:
        return False
    schedule = window.schedule
    if schedule.daily is not None:
        return (day - anchor).days % schedule.daily.interval_days == 0
    if schedule.weekly is not None:
        weekly = schedule.weekly
        if day.weekday() != weekly.day_of_week.weekday:
            return False
        anchor_monday = anchor - dt.timedelta(days=anchor.weekday())
        return ((day - anchor_monday).days // 7) % weekly.interval_weeks == 0
    if schedule.absolute_monthly is not None:
        monthly = schedule.absolute_monthly
        return (
            day.day == monthly.day_of_month
            and _months_between(anchor, day) % monthly.interval_months == 0
        )
    relative = schedule.relative_monthly
    assert relative is not None  # the Schedule model guarantees exactly one kind
    if day.weekday() != relative.day_of_week.weekday:
        return False
    if _months_between(anchor, day) % relative.interval_months != 0:
        return False
    if relative.week_index is WeekIndex.LAST:
        return day.day + 7 > calendar.monthrange(day.year, day.month)[1]
    return (day.day - 1) // 7 == _WEEK_INDEX[relative.week_index]


def _not_allowed(window: MaintenanceWindow, day: dt.date) -> bool:
    return any(span.start <= day <= span.end for span in window.not_allowed_dates)


def _raw_openings(
    window: MaintenanceWindow, after: dt.datetime
) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """Occurrences, cut by not-allowed dates, in order, each ending after ``after``."""
    zone = parse_utc_offset(window.utc_offset)
    start_time = parse_time_of_day(window.start_time)
    length = dt.timedelta(hours=window.duration_hours)
    local = after.astimezone(zone)
    # An occurrence that started yesterday may still be running (durations <= 24 h).
    day = local.date() - dt.timedelta(days=1)
    last_blocked = max((span.end for span in window.not_allowed_dates), default=day)
    stop = max(day, last_blocked) + _HORIZON
    while day <= stop:
        if occurs_on(window, day):
            start = dt.datetime.combine(day, start_time, tzinfo=zone)
            end = start + length
            midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=zone)
            # An occurrence starting on a not-allowed date is cancelled; one that
            # runs into a not-allowed date stops at that midnight.
            if not _not_allowed(window, day):
                if end > midnight and _not_allowed(window, midnight.date()):
                    end = midnight
                if end > after:
                    yield start, end
        day += dt.timedelta(days=1)


def merge_touching(
    spans: Iterable[tuple[dt.datetime, dt.datetime]],
) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """Merge ``(begin, end)`` spans, given in order of ``begin``, that touch or overlap."""
    current: tuple[dt.datetime, dt.datetime] | None = None
    for begin, finish in spans:
        if current is not None and begin <= current[1]:
            current = (current[0], max(current[1], finish))
            continue
        if current is not None:
            yield current
        current = (begin, finish)
    if current is not None:
        yield current


def _openings(
    window: MaintenanceWindow, after: dt.datetime
) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """Openings (back-to-back occurrences merged) that end after ``after``, in order."""
    return merge_touching(_raw_openings(window, after))


def is_open(window: MaintenanceWindow, t: dt.datetime) -> bool:
    """Whether a new upgrade may start at ``t``."""
    t = _aware(t)
    for begin, _finish in _openings(window, t):
        return begin <= t
    return False


def next_opening(window: MaintenanceWindow, t: dt.datetime) -> dt.datetime | None:
    """The first moment at or after ``t`` when the window is open (``t`` itself if open).

    None when it never opens again within three years of ``t`` (or of its last
    not-allowed date).
    """
    t = _aware(t)
    for begin, _finish in _openings(window, t):
        return max(begin, t).astimezone(dt.UTC)
    return None


def current_opening_end(window: MaintenanceWindow, t: dt.datetime) -> dt.datetime | None:
    """When the opening that contains ``t`` closes (None when closed at ``t``).

    Back-to-back occurrences count as one opening. Work already running may
    overrun this moment; no new work starts after it. A window that never
    closes (occurrences that touch without a gap, such as a daily window of 24
    hours) reports the end of the three-year horizon the openings are read over.
    """
    t = _aware(t)
    for begin, finish in _openings(window, t):
        return finish.astimezone(dt.UTC) if begin <= t else None
    return None


def next_scheduled_start(gate: Gate, t: dt.datetime) -> dt.datetime:
    """The next ``startDay`` at ``startTime`` in ``utcOffset`` at or after ``t``.

    As in Fleet, a moment that has passed this week waits for next week.
    """
    t = _aware(t)
    if gate.type is not GateType.SCHEDULED_START or gate.start_day is None:
        raise ValueError("only a ScheduledStart gate with a startDay has a scheduled start")
    zone = parse_utc_offset(gate.utc_offset or "+00:00")
    at = parse_time_of_day(gate.start_time or "00:00")
    local = t.astimezone(zone)
    days_ahead = (gate.start_day.weekday - local.weekday()) % 7
    candidate = dt.datetime.combine(local.date() + dt.timedelta(days=days_ahead), at, tzinfo=zone)
    if candidate < local:
        candidate += dt.timedelta(days=7)
    return candidate.astimezone(dt.UTC)


class WindowPriority(enum.IntEnum):
    """Which members of a group go first (lower first), as Fleet orders them."""

    OPEN_NOW = 0
    OPENS_SOON = 1
    NO_WINDOW = 2
    CLOSED = 3


#: "Opens soon" means within this long (Fleet's rule).
OPENS_SOON_WITHIN = dt.timedelta(hours=4)


def window_priority(window: MaintenanceWindow | None, t: dt.datetime) -> WindowPriority:
    """Open now > opens within 4 h > no window > closed."""
    if window is None:
        return WindowPriority.NO_WINDOW
    opening = next_opening(window, t)
    if opening is None:
        return WindowPriority.CLOSED
    if opening <= t:
        return WindowPriority.OPEN_NOW
    if opening - t <= OPENS_SOON_WITHIN:
        return WindowPriority.OPENS_SOON
    return WindowPriority.CLOSED


def member_order_key(
    window: MaintenanceWindow | None, name: str, now: dt.datetime
) -> tuple[WindowPriority, str]:
    """The one order of a group's members, shared by the planner and the run's scheduler:
    window open now, then opening within 4 h, then no window, then closed; then by name."""
    return window_priority(window, now), name
