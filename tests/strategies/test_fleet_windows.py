"""Fleet-window math: calendar windows in IANA time zones, across DST changes."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.domain.schedule import FleetWindow
from engine.domain.windows import DayOfWeek
from strategies import fleet_window_end, fleet_window_next_opening, fleet_window_open
from strategies.fleet_windows import occurrence_start, occurs_on

ZONES = st.sampled_from(
    [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",  # a 30-minute DST shift
        "Asia/Kolkata",
        "Pacific/Chatham",
        "America/Santiago",
    ]
)
MOMENTS = st.datetimes(
    min_value=dt.datetime(2025, 1, 1),
    max_value=dt.datetime(2028, 12, 31),
    timezones=st.just(dt.UTC),
)
DATES = st.dates(min_value=dt.date(2025, 1, 1), max_value=dt.date(2028, 12, 31))
TIMES = st.builds(
    lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.sampled_from([0, 15, 30, 45])
)


@st.composite
def fleet_windows(draw: st.DrawFn) -> FleetWindow:
    return FleetWindow.model_validate(
        {
            "days": draw(st.lists(st.sampled_from(list(DayOfWeek)), min_size=1, max_size=7)),
            "startTime": draw(TIMES),
            "timeZone": draw(ZONES),
            "skipDates": draw(st.lists(DATES, max_size=4)),
            "durationHours": draw(st.integers(1, 24)),
        }
    )


def berlin_saturday(**overrides: object) -> FleetWindow:
    fields: dict[str, object] = {
        "days": ["Sat"],
        "startTime": "02:00",
        "timeZone": "Europe/Berlin",
        "durationHours": 4,
    }
    fields.update(overrides)
    return FleetWindow.model_validate(fields)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC)


# --- the model -------------------------------------------------------------------------------


def test_window_reads_camel_case_and_day_abbreviations() -> None:
    window = berlin_saturday(days=["Sun", "sat", "Saturday"], skipDates=["2026-12-26"])
    assert window.days == [DayOfWeek.SATURDAY, DayOfWeek.SUNDAY]
    assert window.skip_dates == [dt.date(2026, 12, 26)]
    assert window.to_json_dict()["timeZone"] == "Europe/Berlin"


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"timeZone": "Europe/Berlinn"}, "timeZone", "not an IANA time zone"),
        ({"timeZone": "../etc/passwd"}, "timeZone", "not an IANA time zone"),
        ({"startTime": "24:00"}, "startTime", "HH:mm"),
        ({"durationHours": 0}, "durationHours", "greater than or equal to 1"),
        ({"durationHours": 25}, "durationHours", "less than or equal to 24"),
        ({"days": []}, "days", "at least 1"),
        ({"days": ["Caturday"]}, "days", "not a day of the week"),
    ],
)
def test_invalid_window_names_the_field(
    overrides: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        berlin_saturday(**overrides)
    errors = caught.value.errors()
    assert errors[0]["loc"][0] == field
    assert message in str(caught.value)


# --- examples ----------------------------------------------------------------------------------


def test_saturday_two_am_berlin_opens_at_one_utc_in_winter_and_midnight_in_summer() -> None:
    window = berlin_saturday()
    assert fleet_window_next_opening(window, utc(2026, 1, 1)) == utc(2026, 1, 3, 1)
    assert fleet_window_next_opening(window, utc(2026, 7, 1)) == utc(2026, 7, 4, 0)
    assert fleet_window_end(window, utc(2026, 7, 4, 3)) == utc(2026, 7, 4, 4)


def test_open_from_start_to_end_excluded() -> None:
    window = berlin_saturday()
    assert not fleet_window_open(window, utc(2026, 1, 3, 0, 59))
    assert fleet_window_open(window, utc(2026, 1, 3, 1))
    assert fleet_window_open(window, utc(2026, 1, 3, 4, 59))
    assert not fleet_window_open(window, utc(2026, 1, 3, 5))
    assert fleet_window_end(window, utc(2026, 1, 3, 5)) is None


def test_duration_is_elapsed_time_across_the_dst_change() -> None:
    # Saturday 2026-03-28 22:00 CET, 6 hours, runs into the spring-forward night.
    window = berlin_saturday(startTime="22:00", durationHours=6)
    assert fleet_window_end(window, utc(2026, 3, 28, 21)) == utc(2026, 3, 29, 3)


def test_start_in_the_spring_forward_gap_uses_the_offset_before_the_change() -> None:
    window = berlin_saturday(days=["Sun"], startTime="02:30")
    # 02:30 does not exist on 2026-03-29 in Berlin: it is read as 02:30 CET = 03:30 CEST.
    assert fleet_window_next_opening(window, utc(2026, 3, 28)) == utc(2026, 3, 29, 1, 30)


def test_start_in_the_fall_back_hour_is_the_first_of_the_two() -> None:
    window = berlin_saturday(days=["Sun"], startTime="02:30")
    # 02:30 happens twice on 2026-10-25 in Berlin: first at CEST (00:30 UTC).
    assert fleet_window_next_opening(window, utc(2026, 10, 24)) == utc(2026, 10, 25, 0, 30)


def test_skip_date_cancels_that_occurrence_only() -> None:
    window = berlin_saturday(skipDates=["2026-12-26"])
    assert fleet_window_next_opening(window, utc(2026, 12, 25)) == utc(2027, 1, 2, 1)
    assert fleet_window_next_opening(window, utc(2026, 12, 19)) == utc(2026, 12, 19, 1)


def test_back_to_back_occurrences_form_one_opening() -> None:
    window = berlin_saturday(days=["Sat", "Sun"], startTime="00:00", durationHours=24)
    # Saturday 00:00 CET to Monday 00:00 CET.
    assert fleet_window_end(window, utc(2026, 1, 3, 12)) == utc(2026, 1, 4, 23)


def test_naive_moments_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        fleet_window_open(berlin_saturday(), dt.datetime(2026, 1, 3))


# --- properties --------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(window=fleet_windows(), t=MOMENTS)
def test_next_opening_is_open_and_nothing_before_it_is(window: FleetWindow, t: dt.datetime) -> None:
    opening = fleet_window_next_opening(window, t)
    assert opening is not None
    assert opening >= t
    assert fleet_window_open(window, opening)
    if opening > t:
        assert not fleet_window_open(window, t)
        assert fleet_window_end(window, t) is None
        before = opening - dt.timedelta(minutes=1)
        if before >= t:
            assert not fleet_window_open(window, before)
        # A fresh opening starts at an occurrence: a window day, not skipped.
        local_day = opening.astimezone(zoneinfo.ZoneInfo(window.time_zone)).date()
        starts = [
            occurrence_start(window, local_day + dt.timedelta(days=shift)) for shift in (-1, 0, 1)
        ]
        assert opening in starts
    else:
        assert fleet_window_open(window, t)


@settings(max_examples=300, deadline=None)
@given(window=fleet_windows(), t=MOMENTS)
def test_an_open_window_closes_at_its_end(window: FleetWindow, t: dt.datetime) -> None:
    end = fleet_window_end(window, t)
    if not fleet_window_open(window, t):
        assert end is None
        return
    assert end is not None
    assert end > t
    assert fleet_window_open(window, end - dt.timedelta(seconds=1))
    if end - t < dt.timedelta(days=8):  # not a never-closing window cut at the look-ahead
        assert not fleet_window_open(window, end)


@settings(max_examples=200, deadline=None)
@given(window=fleet_windows(), day=DATES)
def test_occurrences_start_at_the_local_start_time_unless_in_a_gap(
    window: FleetWindow, day: dt.date
) -> None:
    start = occurrence_start(window, day)
    local = start.astimezone(zoneinfo.ZoneInfo(window.time_zone))
    wall = dt.time.fromisoformat(window.start_time)
    if local.time() != wall:
        # Only a start time skipped by a DST change moves, and forward by the shift.
        shifted = dt.datetime.combine(day, wall) - local.replace(tzinfo=None)
        assert dt.timedelta(hours=-1) <= shifted < dt.timedelta(0)
    if occurs_on(window, day) and start.astimezone(dt.UTC) >= utc(2025, 1, 3):
        assert fleet_window_open(window, start)


@settings(max_examples=200, deadline=None)
@given(window=fleet_windows(), t=MOMENTS)
def test_results_are_utc_and_do_not_depend_on_the_input_zone(
    window: FleetWindow, t: dt.datetime
) -> None:
    tokyo = t.astimezone(zoneinfo.ZoneInfo("Asia/Tokyo"))
    assert fleet_window_open(window, tokyo) == fleet_window_open(window, t)
    assert fleet_window_next_opening(window, tokyo) == fleet_window_next_opening(window, t)
    opening = fleet_window_next_opening(window, tokyo)
    assert opening is not None
    assert opening.tzinfo == dt.UTC
