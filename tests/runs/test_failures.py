"""The sentence a person reads for a failure: what the innermost error said, its code once."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    RetryState,
    TimeoutError,
    TimeoutType,
)

from activities.update import _cause
from workflows.failures import failure_reason, say_code_once
from workflows.network import _failure


def test_a_code_repeated_by_each_layer_is_said_once() -> None:
    assert (
        say_code_once("singleNetwork: singleNetwork: 'a-1' already belongs to network 'lab'")
        == "singleNetwork: 'a-1' already belongs to network 'lab'"
    )
    assert say_code_once("clusterId: clusterId: clusterId: taken") == "clusterId: taken"


def test_a_code_said_once_and_other_colons_are_left_alone() -> None:
    text = "singleNetwork: 'a-1' is a member of 'prod'; clusterId: 3 is taken"
    assert say_code_once(text) == text
    assert say_code_once("mesh health: a -> b: not ready") == "mesh health: a -> b: not ready"


def _activity_failed(cause: BaseException) -> ActivityError:
    outer = ActivityError(
        "Activity task failed",
        scheduled_event_id=1,
        started_event_id=2,
        identity="worker",
        activity_type="acquire_network",
        activity_id="1",
        retry_state=RetryState.NON_RETRYABLE_FAILURE,
    )
    outer.__cause__ = cause
    return outer


def _timed_out() -> TimeoutError:
    return TimeoutError(
        "activity StartToClose timeout",
        type=TimeoutType.START_TO_CLOSE,
        last_heartbeat_details=[],
    )


def _rejected(message: str) -> WorkflowUpdateFailedError:
    return WorkflowUpdateFailedError(ApplicationError(message, non_retryable=True))


Reader = Callable[[BaseException], str]
#: Each place that read a failure chain before there was one helper.
READERS: dict[str, Reader] = {"runs": failure_reason, "network": _failure, "lease": _cause}


@pytest.mark.parametrize("reader", READERS.values(), ids=READERS.keys())
def test_an_activity_failure_reads_as_what_the_activity_said(reader: Reader) -> None:
    error = _activity_failed(ApplicationError("preflight: a-1 is not ready"))
    assert reader(error) == "preflight: a-1 is not ready"


@pytest.mark.parametrize(
    ("reader", "text"),
    [
        (failure_reason, "the network is deleted"),
        (_failure, "Workflow update failed"),
        (_cause, "the network is deleted"),
    ],
    ids=READERS.keys(),
)
def test_an_update_rejection_reads_as(reader: Reader, text: str) -> None:
    assert reader(_rejected("the network is deleted")) == text


@pytest.mark.parametrize(
    ("reader", "text"),
    [
        (failure_reason, "a-1 is not ready"),
        (_failure, "activity ScheduleToClose timeout"),
        (_cause, "a-1 is not ready"),
    ],
    ids=READERS.keys(),
)
def test_an_activity_retried_until_its_deadline_reads_as(reader: Reader, text: str) -> None:
    deadline = TimeoutError(
        "activity ScheduleToClose timeout",
        type=TimeoutType.SCHEDULE_TO_CLOSE,
        last_heartbeat_details=[],
    )
    deadline.__cause__ = ApplicationError("a-1 is not ready")
    assert reader(_activity_failed(deadline)) == text


@pytest.mark.parametrize(
    ("reader", "text"),
    [
        (failure_reason, "Activity task failed"),
        (_failure, "activity StartToClose timeout"),
        (_cause, "activity StartToClose timeout"),
    ],
    ids=READERS.keys(),
)
def test_a_timed_out_activity_reads_as(reader: Reader, text: str) -> None:
    assert reader(_activity_failed(_timed_out())) == text


@pytest.mark.parametrize(
    ("reader", "text"),
    [
        (failure_reason, "singleNetwork: 'a-1' is taken"),
        (_failure, "singleNetwork: 'a-1' is taken"),
        (_cause, "singleNetwork: singleNetwork: 'a-1' is taken"),
    ],
    ids=READERS.keys(),
)
def test_a_repeated_rule_code_reads_as(reader: Reader, text: str) -> None:
    error = _activity_failed(ApplicationError("singleNetwork: singleNetwork: 'a-1' is taken"))
    assert reader(error) == text
