"""Concurrency and failure-budget math, as Fleet defines it.

``maxConcurrency``: ``"N"`` or ``"P%"``; percentages round *down*, never below
1. The stage's value (default and cap 50) is a ceiling on members in flight
across all its groups together; a group's value (default ``"1"``) is further
capped by its size and by the stage's. ``maxAllowedFailures``: ``"N"`` or
``"P%"`` (percentages round *up*), default 0 = stop at the first failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Fleet's pattern for maxConcurrency.
CONCURRENCY_PATTERN = re.compile(r"^(?:([1-9]\d*)|([1-9]\d?|100)%)$")
#: maxAllowedFailures also accepts 0 (fail fast).
FAILURES_PATTERN = re.compile(r"^(?:(0|[1-9]\d*)|([1-9]\d?|100)%)$")

#: A stage's default maxConcurrency, and the most it may ever be.
STAGE_CONCURRENCY_CAP = 50
GROUP_DEFAULT_CONCURRENCY = 1


@dataclass(frozen=True)
class Quantity:
    """A count (``"3"``) or a percentage (``"25%"``) of some number of members."""

    value: int
    percent: bool = False

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)

    def floor_of(self, size: int) -> int:
        """The count, or the percentage of ``size`` rounded down."""
        return self.value * size // 100 if self.percent else self.value

    def ceil_of(self, size: int) -> int:
        """The count, or the percentage of ``size`` rounded up."""
        return -(-self.value * size // 100) if self.percent else self.value


def _parse(text: str, pattern: re.Pattern[str], what: str) -> Quantity:
    match = pattern.match(text)
    if not match:
        raise ValueError(f"{text!r} does not match {what} (pattern {pattern.pattern})")
    count, percent = match.groups()
    return Quantity(int(count)) if count is not None else Quantity(int(percent), percent=True)


def parse_concurrency(text: str) -> Quantity:
    """Parse a maxConcurrency value; raise ValueError naming the pattern."""
    return _parse(text, CONCURRENCY_PATTERN, "'N' (N >= 1) or 'P%' (1..100)")


def parse_failures(text: str) -> Quantity:
    """Parse a maxAllowedFailures value; raise ValueError naming the pattern."""
    return _parse(text, FAILURES_PATTERN, "'N' (N >= 0) or 'P%' (1..100)")


def stage_concurrency(declared: Quantity | None, stage_size: int) -> int:
    """Members in flight at once across a stage's groups: max(1, min(cap, N or floor(P%)))."""
    wanted = STAGE_CONCURRENCY_CAP if declared is None else declared.floor_of(stage_size)
    return max(1, min(STAGE_CONCURRENCY_CAP, wanted))


def group_concurrency(declared: Quantity | None, group_size: int, stage_limit: int) -> int:
    """Members in flight at once in a group: max(1, min(size, N or floor(P%), stage's))."""
    wanted = GROUP_DEFAULT_CONCURRENCY if declared is None else declared.floor_of(group_size)
    return max(1, min(group_size, wanted, stage_limit))


def failure_budget(declared: Quantity | None, size: int) -> int:
    """Failures absorbed before failing: N, or ceil(P% x size); 0 when not declared."""
    return 0 if declared is None else declared.ceil_of(size)
