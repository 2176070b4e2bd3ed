"""Maintenance-window math: openings, their ends, and ScheduledStart gates."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from engine.domain.strategy import Gate, GateType
from engine.domain.windows import DayOfWeek, MaintenanceWindow, WeekIndex, parse_utc_offset
from strategies import (
    WindowPriority,
    current_opening_end,
    is_open,
    next_opening,
    next_scheduled_start,
    window_priority,
)
from strategies.windows import occurs_on

OFFSETS = st.sampled_from(["+00:00", "+01:00", "-05:00", "+05:30", "+14:00", "-12:00", "-03:30"])
DAYS = st.sampled_from(list(DayOfWeek))
MOMENTS = st.datetimes(
    min_value=dt.datetime(2025, 1, 1),
    max_value=dt.datetime(2028, 12, 31),
    timezones=st.just(dt.UTC),
)
DATES = st.dates(min_value=dt.date(2025, 1, 1), max_value=dt.date(2028, 12, 31))
TIMES = st.builds(
    lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.sampled_from([0, 15, 30, 45])
)
SCHEDULES = st.one_of(
    st.builds(lambda n: {"daily": {"intervalDays": n}}, st.integers(1, 7)),
    st.builds(
        lambda n, d: {"weekly": {"intervalWeeks": n, "dayOfWeek": d.value}},
        st.integers(1, 4),
        DAYS,
    ),
    st.builds(
        lambda n, d: {"absoluteMonthly": {"intervalMonths": n, "dayOfMonth": d}},
        st.integers(1, 6),
        st.integers(1, 31),
    ),
    st.builds(
        lambda n, d, w: {
            "relativeMonthly": {"intervalMonths": n, "dayOfWeek": d.value, "weekIndex": w.value}
        },
        st.integers(1, 6),
        DAYS,
        st.sampled_from(list(WeekIndex)),
    ),
)


@st.composite
def windows(
    draw: st.DrawFn, schedules: st.SearchStrategy[dict[str, object]] = SCHEDULES
) -> MaintenanceWindow:
    spans = []
    for start in draw(st.lists(DATES, max_size=3)):
        spans.append({"start": start, "end": start + dt.timedelta(days=draw(st.integers(0, 20)))})
    return MaintenanceWindow.model_validate(
        {
            "schedule": draw(schedules),
            "durationHours": draw(st.integers(4, 24)),
            "utcOffset": draw(OFFSETS),
            "startTime": draw(TIMES),
            "startDate": draw(st.one_of(st.none(), DATES)),
            "notAllowedDates": spans,
        }
    )


#: An opening this long is the horizon's end, not a close (see ``current_opening_end``).
NEVER_CLOSES = dt.timedelta(days=3 * 365)


def not_allowed(window: MaintenanceWindow, moment: dt.datetime) -> bool:
    local = moment.astimezone(parse_utc_offset(window.utc_offset)).date()
    return any(span.start <= local <= span.end for span in window.not_allowed_dates)


@settings(max_examples=150, deadline=None)
@given(windows(), MOMENTS)
def test_the_next_opening_is_never_before_t_and_the_window_is_open_then(
    window: MaintenanceWindow, t: dt.datetime
) -> None:
    opening = next_opening(window, t)
    assume(opening is not None)
    assert opening is not None
    assert opening >= t
    assert is_open(window, opening)
    assert not not_allowed(window, opening)
    if opening > t:
        assert not is_open(window, t)
        assert not is_open(window, opening - dt.timedelta(seconds=1))


def test_a_daily_window_of_24_hours_never_closes_within_the_horizon() -> None:
    """Touching occurrences merge into one opening that lasts to the horizon's end."""
    window = MaintenanceWindow.model_validate(
        {"schedule": {"daily": {"intervalDays": 1}}, "durationHours": 24, "startTime": "00:00"}
    )
    t = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    end = current_opening_end(window, t)
    assert end is not None
    assert end - t >= NEVER_CLOSES
    assert all(is_open(window, t + dt.timedelta(days=d, hours=7)) for d in range(0, 1000, 37))


#: Found by Hypothesis: a daily 24-hour window that runs into a not-allowed date exactly
#: three years on closes there (at that midnight), at the horizon's length.
CLOSES_AT_THE_HORIZON = MaintenanceWindow.model_validate(
    {
        "schedule": {"daily": {"intervalDays": 1}},
        "durationHours": 24,
        "startTime": "00:00",
        "notAllowedDates": [{"start": "2028-01-01", "end": "2028-01-01"}],
    }
)


@settings(max_examples=150, deadline=None)
@given(windows(), MOMENTS)
@example(CLOSES_AT_THE_HORIZON, dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
def test_an_open_window_stays_open_until_its_current_opening_ends(
    window: MaintenanceWindow, t: dt.datetime
) -> None:
    end = current_opening_end(window, t)
    if not is_open(window, t):
        assert end is None
        return
    assert end is not None
    assert end > t
    if end - t >= NEVER_CLOSES and is_open(window, end):
        # A window whose occurrences touch (daily, 24 hours) never closes: its end
        # is the horizon, and it is open there too. (One that reaches the horizon
        # and closes there is checked as any other below.)
        assert window.duration_hours == 24
        return
    assert not is_open(window, end)
    assert is_open(window, end - dt.timedelta(seconds=1))
    assert not not_allowed(window, end - dt.timedelta(seconds=1))


@settings(max_examples=150, deadline=None)
@given(
    windows(st.builds(lambda d: {"weekly": {"intervalWeeks": 1, "dayOfWeek": d.value}}, DAYS)),
    MOMENTS,
)
def test_a_weekly_window_opens_on_its_weekday_at_its_time_in_its_offset(
    window: MaintenanceWindow, t: dt.datetime
) -> None:
    opening = next_opening(window, t)
    assume(opening is not None and opening > t)
    assert opening is not None
    local = opening.astimezone(parse_utc_offset(window.utc_offset))
    assert window.schedule.weekly is not None
    assert local.weekday() == window.schedule.weekly.day_of_week.weekday
    assert local.strftime("%H:%M") == window.start_time


def saturday_window(**extra: object) -> MaintenanceWindow:
    return MaintenanceWindow.model_validate(
        {
            "schedule": {"weekly": {"intervalWeeks": 1, "dayOfWeek": "Saturday"}},
            "durationHours": 4,
            "startTime": "02:00",
            "utcOffset": "+01:00",
            **extra,
        }
    )


def test_a_saturday_window_in_plus_one_opens_at_one_utc_and_closes_four_hours_later() -> None:
    window = saturday_window()
    friday = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
    assert next_opening(window, friday) == dt.datetime(2026, 11, 28, 1, 0, tzinfo=dt.UTC)
    inside = dt.datetime(2026, 11, 28, 3, 0, tzinfo=dt.UTC)
    assert is_open(window, inside)
    assert next_opening(window, inside) == inside
    assert current_opening_end(window, inside) == dt.datetime(2026, 11, 28, 5, 0, tzinfo=dt.UTC)


def test_an_opening_on_a_not_allowed_date_is_skipped_for_the_next_one() -> None:
    window = saturday_window(notAllowedDates=[{"start": "2026-11-28", "end": "2026-11-28"}])
    friday = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
    assert next_opening(window, friday) == dt.datetime(2026, 12, 5, 1, 0, tzinfo=dt.UTC)


def test_a_full_day_daily_window_is_one_long_opening() -> None:
    window = MaintenanceWindow.model_validate(
        {"schedule": {"daily": {"intervalDays": 1}}, "durationHours": 24, "startTime": "00:00"}
    )
    t = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    end = current_opening_end(window, t)
    assert end is not None
    assert end - t > dt.timedelta(days=300)


def test_relative_monthly_last_weekday_is_the_last_one_in_the_month() -> None:
    window = MaintenanceWindow.model_validate(
        {
            "schedule": {
                "relativeMonthly": {"intervalMonths": 1, "dayOfWeek": "Friday", "weekIndex": "Last"}
            },
            "durationHours": 4,
        }
    )
    assert occurs_on(window, dt.date(2026, 1, 30))
    assert not occurs_on(window, dt.date(2026, 1, 23))


def test_absolute_monthly_skips_months_without_that_day() -> None:
    window = MaintenanceWindow.model_validate(
        {
            "schedule": {"absoluteMonthly": {"intervalMonths": 1, "dayOfMonth": 31}},
            "durationHours": 4,
        }
    )
    t = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
    assert next_opening(window, t) == dt.datetime(2026, 5, 31, tzinfo=dt.UTC)


def test_naive_moments_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        is_open(saturday_window(), dt.datetime(2026, 1, 1))


def test_members_are_prioritised_open_now_then_soon_then_no_window_then_closed() -> None:
    window = saturday_window()
    assert window_priority(window, dt.datetime(2026, 11, 28, 2, tzinfo=dt.UTC)) is (
        WindowPriority.OPEN_NOW
    )
    assert window_priority(window, dt.datetime(2026, 11, 27, 22, tzinfo=dt.UTC)) is (
        WindowPriority.OPENS_SOON
    )
    assert window_priority(None, dt.datetime(2026, 11, 27, tzinfo=dt.UTC)) is (
        WindowPriority.NO_WINDOW
    )
    assert window_priority(window, dt.datetime(2026, 11, 25, tzinfo=dt.UTC)) is (
        WindowPriority.CLOSED
    )


@settings(max_examples=200, deadline=None)
@given(DAYS, TIMES, OFFSETS, MOMENTS)
def test_a_scheduled_start_is_the_next_such_moment_within_a_week(
    day: DayOfWeek, time: str, offset: str, t: dt.datetime
) -> None:
    gate = Gate(type=GateType.SCHEDULED_START, start_day=day, start_time=time, utc_offset=offset)
    start = next_scheduled_start(gate, t)
    assert t <= start < t + dt.timedelta(days=7)
    local = start.astimezone(parse_utc_offset(offset))
    assert local.weekday() == day.weekday
    assert local.strftime("%H:%M") == time
