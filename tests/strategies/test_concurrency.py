"""Concurrency and failure-budget math, against Fleet's definitions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strategies import (
    Quantity,
    failure_budget,
    group_concurrency,
    parse_concurrency,
    parse_failures,
    stage_concurrency,
)
from strategies.concurrency import STAGE_CONCURRENCY_CAP

SIZES = st.integers(min_value=0, max_value=300)
QUANTITIES = st.one_of(
    st.none(),
    st.builds(Quantity, st.integers(min_value=1, max_value=400)),
    st.builds(Quantity, st.integers(min_value=1, max_value=100), st.just(True)),
)


@given(QUANTITIES, SIZES)
def test_a_stage_runs_at_least_one_and_never_more_than_the_cap(
    declared: Quantity | None, size: int
) -> None:
    limit = stage_concurrency(declared, size)
    assert 1 <= limit <= STAGE_CONCURRENCY_CAP
    if declared is not None and declared.percent:
        assert limit == max(1, min(STAGE_CONCURRENCY_CAP, declared.value * size // 100))


@given(QUANTITIES, SIZES, st.integers(min_value=1, max_value=STAGE_CONCURRENCY_CAP))
def test_a_group_is_capped_by_its_size_and_its_stage_but_runs_at_least_one(
    declared: Quantity | None, size: int, stage_limit: int
) -> None:
    limit = group_concurrency(declared, size, stage_limit)
    assert limit >= 1
    assert limit <= max(1, min(size, stage_limit))
    if declared is None:
        assert limit == 1


@given(st.integers(min_value=1, max_value=100), st.integers(min_value=1, max_value=300))
def test_percent_concurrency_rounds_down_and_failures_round_up(percent: int, size: int) -> None:
    quantity = Quantity(percent, percent=True)
    exact = percent * size / 100
    assert group_concurrency(quantity, size, STAGE_CONCURRENCY_CAP) == max(
        1, min(size, STAGE_CONCURRENCY_CAP, int(exact))
    )
    budget = failure_budget(quantity, size)
    assert budget >= exact
    assert budget - exact < 1


@given(SIZES)
def test_no_declared_budget_means_stop_at_the_first_failure(size: int) -> None:
    assert failure_budget(None, size) == 0


@pytest.mark.parametrize("text", ["1", "3", "50", "1%", "25%", "99%", "100%"])
def test_fleet_concurrency_values_are_accepted(text: str) -> None:
    assert str(parse_concurrency(text)) == text


@pytest.mark.parametrize("text", ["0", "01", "0%", "101%", "100.0%", "-1", "%", "1.5", " 1"])
def test_values_outside_fleets_pattern_are_rejected_with_the_pattern(text: str) -> None:
    with pytest.raises(ValueError, match="pattern"):
        parse_concurrency(text)


def test_failures_also_accept_zero() -> None:
    assert parse_failures("0") == Quantity(0)
    with pytest.raises(ValueError, match="pattern"):
        parse_concurrency("0")
