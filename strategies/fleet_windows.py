"""Fleet-window math over ``engine.domain.schedule.FleetWindow``.

Every function takes and returns timezone-aware datetimes (results in UTC),
never reads the clock, and is deterministic, so a workflow can call it with
``workflow.now()``. Local times are resolved with ``zoneinfo``, so a window
follows daylight saving time like the Temporal Schedule that fires it.

Semantics:
- an occurrence starts on each window day at ``startTime`` local time and
  lasts ``durationHours`` of elapsed time (a 4-hour window across a DST
  change is still 4 hours long);
- a start time that does not exist that day (the spring-forward gap) is read
  with the offset in force before the change (02:30 becomes 03:30 summer
  time); one that happens twice (fall back) means the first of the two;
- no occurrence starts on a ``skipDates`` local date (an occurrence that
  started the day before runs to its end, as the schedule only skips firings);
- occurrences that touch or overlap form one opening.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from engine.domain.schedule import FleetWindow
from engine.domain.windows import parse_time_of_day
from strategies.windows import merge_touching

#: How far past ``t`` (or the last skip date) to look: a week always holds every window day.
_LOOKAHEAD = dt.timedelta(days=8)


def _aware(t: dt.datetime) -> dt.datetime:
    if t.tzinfo is None or t.tzinfo.utcoffset(t) is None:
        raise ValueError("the moment must be timezone-aware (use datetime.now(UTC))")
    return t


def occurrence_start(window: FleetWindow, day: dt.date) -> dt.datetime:
    """When an occurrence on local date ``day`` starts, in UTC (whether or not one occurs)."""
    local = dt.datetime.combine(day, parse_time_of_day(window.start_time), tzinfo=window.zone)
    return local.astimezone(dt.UTC)


def occurs_on(window: FleetWindow, day: dt.date) -> bool:
    """Whether an occurrence starts on local date ``day`` (window day, not skipped)."""
    weekdays = {d.weekday for d in window.days}
    return day.weekday() in weekdays and day not in window.skip_dates


def _occurrences(
    window: FleetWindow, after: dt.datetime
) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """Occurrences in order that end after ``after``, up to the look-ahead horizon."""
    length = dt.timedelta(hours=window.duration_hours)
    # Durations are <= 24 h; two days back covers a DST shift as well.
    day = after.astimezone(window.zone).date() - dt.timedelta(days=2)
    last_skip = window.skip_dates[-1] if window.skip_dates else day
    stop = max(after.astimezone(window.zone).date(), last_skip) + _LOOKAHEAD
    while day <= stop:
        if occurs_on(window, day):
            start = occurrence_start(window, day)
            end = start + length
            if end > after:
                yield start, end
        day += dt.timedelta(days=1)


def _openings(window: FleetWindow, after: dt.datetime) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """Openings (touching occurrences merged) that end after ``after``, in order."""
    return merge_touching(_occurrences(window, after))


def fleet_window_open(window: FleetWindow, t: dt.datetime) -> bool:
    """Whether a new member upgrade may start at ``t`` (start included, end excluded)."""
    t = _aware(t)
    for begin, _finish in _openings(window, t):
        return begin <= t
    return False


def fleet_window_next_opening(window: FleetWindow, t: dt.datetime) -> dt.datetime | None:
    """The first moment at or after ``t`` when the window is open (``t`` itself when open).

    None only when no occurrence is left within a week after ``t`` and after
    the last skip date, which a valid window (at least one day) never is.
    """
    t = _aware(t)
    for begin, _finish in _openings(window, t):
        return max(begin, t).astimezone(dt.UTC)
    return None


def fleet_window_end(window: FleetWindow, t: dt.datetime) -> dt.datetime | None:
    """When the opening that contains ``t`` closes, in UTC (None when closed at ``t``).

    Back-to-back occurrences count as one opening. Members in flight may
    overrun this moment; no new member starts after it. A window that never
    closes (every day, 24 hours, nothing skipped) reports the end of the
    look-ahead horizon, where it is still open.
    """
    t = _aware(t)
    for begin, finish in _openings(window, t):
        return finish.astimezone(dt.UTC) if begin <= t else None
    return None
