"""The sentence a person reads for a failure: what our code said, its rule code once.

One helper (``engine/domain/failures.py``) reads every failure chain: the
runs, the network workflow, the lease activity and the client all used to
read it their own way.
"""

from __future__ import annotations

from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    RetryState,
    TimeoutError,
    TimeoutType,
)

from engine.domain.failures import failure_text, say_code_once


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


def _timed_out(kind: TimeoutType) -> TimeoutError:
    return TimeoutError(f"activity {kind.name} timeout", type=kind, last_heartbeat_details=[])


def test_an_activity_failure_reads_as_what_the_activity_said() -> None:
    error = _activity_failed(ApplicationError("preflight: a-1 is not ready"))
    assert failure_text(error) == "preflight: a-1 is not ready"


def test_a_child_that_failed_because_of_an_activity_reads_as_what_the_child_said() -> None:
    said = ApplicationError("drain: a-1 stays drained")
    said.__cause__ = _activity_failed(ApplicationError("annotation write refused"))
    assert failure_text(_activity_failed(said)) == "drain: a-1 stays drained"


def test_an_update_rejection_reads_as_its_reason() -> None:
    rejected = WorkflowUpdateFailedError(ApplicationError("the network is deleted"))
    assert failure_text(rejected) == "the network is deleted"


def test_a_timed_out_activity_reads_as_its_timeout_not_as_the_wrapper() -> None:
    error = _activity_failed(_timed_out(TimeoutType.START_TO_CLOSE))
    assert failure_text(error) == "activity START_TO_CLOSE timeout"


def test_an_activity_retried_until_its_deadline_reads_as_its_last_attempt() -> None:
    deadline = _timed_out(TimeoutType.SCHEDULE_TO_CLOSE)
    deadline.__cause__ = ApplicationError("a-1 is not ready")
    assert failure_text(_activity_failed(deadline)) == "a-1 is not ready"


def test_a_repeated_rule_code_is_said_once_in_the_text() -> None:
    error = _activity_failed(ApplicationError("singleNetwork: singleNetwork: 'a-1' is taken"))
    assert failure_text(error) == "singleNetwork: 'a-1' is taken"


def test_an_error_with_no_cause_reads_as_itself() -> None:
    assert failure_text(RuntimeError("connection refused")) == "connection refused"
