"""Durations as people write them in files: ``90s``, ``10m``, ``1h30m``, ``2d``."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

#: The longest duration meshfleet accepts anywhere (a soak, a timeout, a window):
#: beyond it a value is a typo, and Python's timedelta and Temporal's timers overflow.
MAX_DURATION = dt.timedelta(days=365)


def _bounded(seconds: float, text: object) -> dt.timedelta:
    """``seconds`` as a timedelta, or ValueError when negative, not finite or too long."""
    if math.isnan(seconds):
        raise ValueError(f"{text!r} is not a duration like '90s', '10m' or '1h30m'")
    if seconds < 0:
        raise ValueError(f"{text!r} is negative: a duration is 0s or more")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"{text!r} is out of range: a duration is at most 365d")
    return dt.timedelta(seconds=seconds)


def parse_duration(text: str) -> dt.timedelta:
    """'1h30m' -> 5400 s. A bare number means seconds. Raise ValueError otherwise.

    Negative, infinite and longer-than-``MAX_DURATION`` values are ValueErrors too.
    """
    value = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return _bounded(float(value), text)
    pos = 0
    total = 0.0
    for match in _PART.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(value) or not value:
        raise ValueError(f"{text!r} is not a duration like '90s', '10m' or '1h30m'")
    return _bounded(total, text)


def format_duration(delta: dt.timedelta) -> str:
    """5400 s -> '1h30m'; the inverse of parse_duration for whole seconds."""
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _to_timedelta(value: object) -> object:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond a float's range
            seconds = math.inf
        return _bounded(seconds, value)
    return value


#: A pydantic field type: accepts '90s', '1h30m', seconds as a number or a timedelta;
#: serializes back to the short text form.
Duration = Annotated[
    dt.timedelta,
    BeforeValidator(_to_timedelta),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
